"""Inference: from a request's tensors to a model's answer.

The layers split module by module (tests/test_layers.py). Sans-IO, none
importing another: ``scheduler`` (weighted priority queues and dynamic
batching), ``model`` (an ONNX Runtime session, its signature, input checks and
the batch helpers), ``v2`` (the Open Inference Protocol codec). Async, on top
of them: ``engine`` (drives the schedulers and the model worker threads),
``metrics`` (Prometheus counters, gauges and histograms) and ``app`` (the
built-in app ``python -m rawserve`` serves).
"""
