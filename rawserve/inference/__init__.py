"""Inference: the scheduler, the model runtime and the result cache (sans-IO)."""
