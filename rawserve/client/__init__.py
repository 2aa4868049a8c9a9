"""An asyncio client for rawserve over HTTP/2 or HTTP/3, with priorities and
pushed results.

    async with rawserve.client.connect("https://127.0.0.1:8443", verify=False) as c:
        answer = await c.predict([0, 0, 7, 16, ...], priority=0)
        again = await c.get(answer["result"])        # GET /results/<key>

One connection multiplexes every request. ``priority=`` sends the RFC 9218
``priority`` header (urgency 0 most urgent .. 7); ``reprioritize`` sends a
PRIORITY_UPDATE for a request still in flight, which moves it in the server's
inference queue. Responses the server pushes are kept in a local cache, and
``get`` of a pushed path answers from it without a round trip. ``http://``
URLs speak HTTP/2 by prior knowledge (h2c); ``https://`` negotiates h2 with
ALPN, or HTTP/3 over QUIC with ``http3=True``.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from rawserve.client.base import Client, ClientError, Response
from rawserve.client.h2client import H2Client

__all__ = ["Client", "ClientError", "Response", "connect"]


@asynccontextmanager
async def connect(
    url: str,
    *,
    verify: bool | str = True,
    enable_push: bool = True,
    http3: bool = False,
) -> AsyncIterator[Client]:
    """Open a connection to ``url``'s host: ``https`` negotiates h2 (or, with
    ``http3=True``, HTTP/3 on the same port over UDP); ``http`` is h2c by prior
    knowledge. ``verify``: False, True (system CAs) or a CA file (such as the
    development certificate, ``certs/dev-cert.pem``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    if http3:
        if not tls:
            raise ValueError("HTTP/3 needs an https:// URL")
        async with _connect_h3(parts.hostname, port, parts.netloc, verify, enable_push) as c:
            yield c
        return
    ctx: ssl.SSLContext | None = None
    if tls:
        ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        if verify is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ctx)
    if ctx is not None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            writer.close()
            raise ClientError(f"{url} did not agree to HTTP/2 (ALPN)")
    client = H2Client(
        reader, writer, authority=parts.netloc, scheme=parts.scheme, enable_push=enable_push
    )
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def _connect_h3(
    host: str, port: int, authority: str, verify: bool | str, enable_push: bool
) -> AsyncIterator[Client]:
    from aioquic.asyncio.client import connect as quic_connect
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration

    from rawserve.client.h3client import H3Client, _Protocol

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=host)
    if verify is False:
        config.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        config.load_verify_locations(verify)
    create = functools.partial(_Protocol, enable_push=enable_push)
    async with quic_connect(host, port, configuration=config, create_protocol=create) as proto:
        assert isinstance(proto, _Protocol)
        client = H3Client(proto, authority=authority)
        try:
            yield client
        finally:
            await client.close()
