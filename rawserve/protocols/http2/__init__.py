"""HTTP/2 (RFC 9113) on h2, sans-IO: ``H2Connection`` is the whole public API.

Modules: ``connection`` (the adapter: h2 events to ours, response events
to h2, request-body flow control, h2c upgrade), ``sender`` (response bodies
to DATA frames in RFC 9218 order), ``stream`` (per-stream state), ``core``
(h2's connection hardened), ``framing`` (frame splitting with limits),
``hpack_codec`` (fast HPACK).
"""

from rawserve.protocols.http2.connection import H2Connection

__all__ = ["H2Connection"]
