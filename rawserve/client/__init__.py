"""An asyncio client for rawserve over HTTP/2, with priorities and pushed results.

    async with rawserve.client.connect("https://127.0.0.1:8443", verify=False) as c:
        answer = await c.predict([0, 0, 7, 16, ...], priority=0)
        again = await c.get(answer["result"])        # GET /results/<key>

One connection multiplexes every request. ``priority=`` sends the RFC 9218
``priority`` header (urgency 0 most urgent .. 7); ``reprioritize`` sends an
HTTP/2 PRIORITY_UPDATE for a request still in flight, which moves it in the
server's inference queue. Responses the server pushes (PUSH_PROMISE) are kept
in a local cache, and ``get`` of a pushed path answers from it without a round
trip. ``http://`` URLs speak HTTP/2 by prior knowledge (h2c); ``https://``
negotiates h2 with ALPN.
"""

from __future__ import annotations

from rawserve.client.h2client import Client, ClientError, Response, connect

__all__ = ["Client", "ClientError", "Response", "connect"]
