"""HTTP/3 (RFC 9114) on aioquic, sans-IO: ``H3Connection`` is the adapter.

Modules: ``connection`` (the adapter: QUIC and HTTP/3 events to ours,
response events to QUIC in RFC 9218 order, credit as the application
consumes, GOAWAY), ``quic`` (aioquic's QuicConnection with receive windows
that open only on consumption), ``h3`` (aioquic's H3Connection leaving
request heads to ``semantics``; GOAWAY; the control-stream frames aioquic
drops), ``stream`` (per-stream state).
"""

from rawserve.protocols.http3.connection import H3_ALPN, H3Connection, reason_from_code

__all__ = ["H3_ALPN", "H3Connection", "reason_from_code"]
