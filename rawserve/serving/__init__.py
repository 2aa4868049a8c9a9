"""Serving: the protocol-neutral stream driver and request body, and the I/O glue."""
