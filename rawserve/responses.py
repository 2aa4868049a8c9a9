"""Responses a handler returns. The driver sends ``status_code`` and
``raw_headers()``, then the bytes of ``body_chunks()`` (or ``body`` directly
when ``is_streaming`` is false), then awaits ``run_background()``.

Headers are kept as the raw ``(name, value)`` byte list the protocol sends,
built once in ``__init__``; ``headers`` is a case-insensitive view that
writes through to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.cookies
import mimetypes
import os
import stat as stat_module
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator, Mapping
from datetime import datetime
from email.utils import format_datetime, formatdate
from typing import Any, Literal
from urllib.parse import quote

from rawserve.background import BackgroundTask, BackgroundTasks
from rawserve.datastructures import URL, MutableHeaders, RawHeaders
from rawserve.encoders import dumps

__all__ = [
    "BackgroundTask",
    "BackgroundTasks",
    "FileResponse",
    "HTMLResponse",
    "JSONResponse",
    "ORJSONResponse",
    "PlainTextResponse",
    "RedirectResponse",
    "Response",
    "StreamingResponse",
]

_NO_BODY_STATUSES = frozenset({204, 304})


_CONTENT_TYPES: dict[tuple[str, str], bytes] = {}


def _content_type(media_type: str, charset: str) -> bytes:
    key = (media_type, charset)
    value = _CONTENT_TYPES.get(key)
    if value is None:
        text = media_type
        if text.startswith("text/") and "charset=" not in text.lower():
            text = f"{text}; charset={charset}"
        value = text.encode("latin-1")
        if len(_CONTENT_TYPES) < 256:  # media types come from code, but stay bounded
            _CONTENT_TYPES[key] = value
    return value


class Response:
    media_type: str | None = None
    charset = "utf-8"
    # False: ``body`` is the whole body and content-length is set.
    is_streaming = False

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.background = background
        self.body = self.render(content)
        self._raw = self._init_headers(headers)
        self._headers: MutableHeaders | None = None

    @classmethod
    def from_raw(cls, body: bytes, status_code: int, raw: RawHeaders) -> Response:
        """A response whose fields are ready to send: lowercase names, bytes,
        content-length and content-type included. For the server's own
        answers on hot paths; applications use the constructor."""
        response = cls.__new__(cls)
        response.status_code = status_code
        response.background = None
        response.body = body
        response._raw = raw
        response._headers = None
        return response

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode(self.charset)
        if isinstance(content, bytearray | memoryview):
            return bytes(content)
        raise TypeError(
            f"{type(self).__name__} content must be bytes or str, not {type(content).__name__}"
            " (use JSONResponse for other values)"
        )

    def _init_headers(self, headers: Mapping[str, str] | None) -> RawHeaders:
        status = self.status_code
        wants_length = not self.is_streaming and status >= 200 and status not in _NO_BODY_STATUSES
        media_type = self.media_type
        if headers is None:
            # The hot path (every handler returning a dict): no user headers.
            raw: RawHeaders = [(b"content-length", b"%d" % len(self.body))] if wants_length else []
            if media_type is not None:
                raw.append((b"content-type", _content_type(media_type, self.charset)))
            return raw
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        names = {name for name, _ in raw}
        if wants_length and b"content-length" not in names:
            raw.append((b"content-length", b"%d" % len(self.body)))
        if media_type is not None and b"content-type" not in names:
            raw.append((b"content-type", _content_type(media_type, self.charset)))
        return raw

    @property
    def headers(self) -> MutableHeaders:
        if self._headers is None:
            self._headers = MutableHeaders(raw=self._raw)
        return self._headers

    def raw_headers(self) -> RawHeaders:
        """``(name, value)`` pairs to send, names lowercase."""
        return self._raw

    async def body_chunks(self) -> AsyncGenerator[bytes, None]:
        if self.body:
            yield self.body

    async def run_background(self) -> None:
        if self.background is not None:
            await self.background()

    def set_cookie(
        self,
        key: str,
        value: str = "",
        max_age: int | None = None,
        expires: datetime | str | int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
        partitioned: bool = False,
    ) -> None:
        cookie: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        cookie[key] = value
        morsel = cookie[key]
        if max_age is not None:
            morsel["max-age"] = max_age
        if expires is not None:
            if isinstance(expires, datetime):
                morsel["expires"] = format_datetime(expires, usegmt=True)
            else:
                morsel["expires"] = expires
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite is not None:
            if samesite.lower() not in ("strict", "lax", "none"):
                raise ValueError("samesite must be either 'strict', 'lax' or 'none'")
            morsel["samesite"] = samesite
        text = cookie.output(header="").strip()
        if partitioned:
            text += "; Partitioned"
        self._raw.append((b"set-cookie", text.encode("latin-1")))

    def delete_cookie(
        self,
        key: str,
        path: str = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        self.set_cookie(
            key,
            max_age=0,
            expires=0,
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status_code}>"


class HTMLResponse(Response):
    media_type = "text/html"


class PlainTextResponse(Response):
    media_type = "text/plain"


class JSONResponse(Response):
    """``content`` serialized with orjson; numpy arrays and scalars,
    dataclasses, datetimes, UUIDs, Decimals, enums and pydantic models work."""

    media_type = "application/json"

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if (
            headers is None
            and media_type is None
            and status_code == 200
            and type(self).render is JSONResponse.render
            and type(self).media_type == "application/json"
        ):
            # The hot path: a handler returned a value. Same result as the
            # general path, without its branches.
            body = dumps(content)
            self.status_code = 200
            self.background = background
            self.body = body
            self._raw = [(b"content-length", b"%d" % len(body)), _JSON_CONTENT_TYPE]
            self._headers = None
            return
        super().__init__(content, status_code, headers, media_type, background)

    def render(self, content: Any) -> bytes:
        return dumps(content)


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


# FastAPI's name for the orjson-backed response; ours always is.
ORJSONResponse = JSONResponse


class RedirectResponse(Response):
    def __init__(
        self,
        url: str | URL,
        status_code: int = 307,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            content=b"", status_code=status_code, headers=headers, background=background
        )
        self.headers["location"] = quote(str(url), safe=":/%#?=@[]!$&'()*+,;")


_STOP = object()


def _next_or_stop(iterator: Iterator[Any]) -> Any:
    # StopIteration cannot cross a Future (it would end the awaiting coroutine).
    return next(iterator, _STOP)


class StreamingResponse(Response):
    """A body produced by an iterable of ``bytes``, ``str`` or ``memoryview``
    chunks. Sync iterables are advanced in a worker thread: a generator that
    blocks (reading a file, waiting on a model) never blocks the loop."""

    is_streaming = True

    def __init__(
        self,
        content: Iterable[Any] | AsyncIterable[Any],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.body_iterator = content
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        self.background = background
        self.body = b""
        self._raw = self._init_headers(headers)
        self._headers = None

    def _encode(self, chunk: Any) -> bytes:
        if isinstance(chunk, bytes):
            return chunk
        if isinstance(chunk, str):
            return chunk.encode(self.charset)
        if isinstance(chunk, memoryview | bytearray):
            return bytes(chunk)
        raise TypeError(
            f"StreamingResponse chunks must be bytes, str or memoryview, not {type(chunk).__name__}"
        )

    async def body_chunks(self) -> AsyncGenerator[bytes, None]:
        content = self.body_iterator
        if isinstance(content, AsyncIterable):
            try:
                async for chunk in content:
                    yield self._encode(chunk)
            finally:
                aclose = getattr(content, "aclose", None)
                if aclose is not None:
                    await aclose()
            return
        iterator = iter(content)
        in_thread = False
        try:
            while True:
                in_thread = True
                chunk = await asyncio.to_thread(_next_or_stop, iterator)
                in_thread = False
                if chunk is _STOP:
                    return
                yield self._encode(chunk)
        finally:
            # Stopped early (client gone): let the generator run its cleanup,
            # unless a worker thread is still inside it.
            close = getattr(iterator, "close", None)
            if close is not None and not in_thread:
                close()


class FileResponse(Response):
    """A file streamed in ``chunk_size`` pieces read in a worker thread."""

    is_streaming = True
    chunk_size = 64 * 1024

    def __init__(
        self,
        path: str | os.PathLike[str],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
        filename: str | None = None,
        stat_result: os.stat_result | None = None,
        method: str | None = None,
        content_disposition_type: str = "attachment",
    ) -> None:
        self.path = os.fspath(path)
        self.status_code = status_code
        self.filename = filename
        self.background = background
        self.send_body = method is None or method.upper() != "HEAD"
        if media_type is None:
            media_type = mimetypes.guess_type(filename or self.path)[0] or "text/plain"
        self.media_type = media_type
        if stat_result is None:
            try:
                stat_result = os.stat(self.path)
            except FileNotFoundError:
                raise RuntimeError(f"File at path {self.path} does not exist.") from None
        if not stat_module.S_ISREG(stat_result.st_mode):
            raise RuntimeError(f"File at path {self.path} is not a file.")
        self.stat_result = stat_result
        self.body = b""
        self._raw = self._init_headers(headers)
        self._headers = None
        h = self.headers
        if filename is not None:
            quoted = quote(filename)
            if quoted != filename:
                disposition = f"{content_disposition_type}; filename*=utf-8''{quoted}"
            else:
                disposition = f'{content_disposition_type}; filename="{filename}"'
            h.setdefault("content-disposition", disposition)
        h.setdefault("content-length", str(stat_result.st_size))
        h.setdefault("last-modified", formatdate(stat_result.st_mtime, usegmt=True))
        etag_base = f"{stat_result.st_mtime}-{stat_result.st_size}"
        etag = hashlib.md5(etag_base.encode(), usedforsecurity=False).hexdigest()
        h.setdefault("etag", f'"{etag}"')

    async def body_chunks(self) -> AsyncGenerator[bytes, None]:
        if not self.send_body:
            return
        f = await asyncio.to_thread(open, self.path, "rb")
        try:
            while True:
                chunk = await asyncio.to_thread(f.read, self.chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()
