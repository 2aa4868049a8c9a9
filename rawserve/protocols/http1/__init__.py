"""HTTP/1.1, sans-IO, on httptools: the connection (``connection``), the
per-request record (``stream``) and the response head's text (``status``)."""

from rawserve.protocols.http1.connection import H1Connection
from rawserve.protocols.http1.status import reason_phrase

__all__ = ["H1Connection", "reason_phrase"]
