"""The request as a handler sees it, built from a RequestReceived event and the
BodyStream the driver feeds.

Construction is a handful of attribute stores: URL, headers, query parameters
and cookies are parsed the first time something asks for them, because most
inference handlers read the body and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Mapping
from http.cookies import _unquote
from typing import Any, Protocol

import orjson

from rawserve.core.events import RequestReceived
from rawserve.core.priority import Priority
from rawserve.datastructures import (
    URL,
    Address,
    FormData,
    Headers,
    QueryParams,
    State,
    UploadFile,
)
from rawserve.formparsers import MultiPartException, parse_multipart, parse_urlencoded
from rawserve.serving.body import BodyStream

__all__ = [
    "FormData",
    "JSONDecodeError",
    "MultiPartException",
    "Request",
    "UploadFile",
]


class JSONDecodeError(json.JSONDecodeError):
    """The body is not valid JSON. ``msg``, ``doc`` and ``pos`` say where."""


_NOT_READ: Any = object()


class Pusher(Protocol):
    """What a request's stream offers for server push (the stream driver)."""

    def push_allowed(self) -> bool: ...

    def push(self, path: str, headers: list[tuple[bytes, bytes]]) -> bool: ...


class Request:
    __slots__ = (
        "_body",
        "_client",
        "_cookies",
        "_event",
        "_form",
        "_headers",
        "_json",
        "_priority_listeners",
        "_pusher",
        "_query_params",
        "_state",
        "_stream",
        "_stream_consumed",
        "_url",
        "app",
        "path_params",
        "priority",
        "route",
        "server",
    )

    def __init__(
        self,
        event: RequestReceived,
        body: BodyStream,
        *,
        client: tuple[str, int] | None = None,
        server: tuple[str, int] | None = None,
        app: Any = None,
    ) -> None:
        self._event = event
        self._stream = body
        self._client: Any = client
        self.server = server
        self.app = app
        self.priority: Priority = event.priority
        self.path_params: dict[str, Any] = {}
        # The matched route (set by the router): its path template names the
        # request in metrics and logs without unbounded label values.
        self.route: Any = None
        self._state: State | None = None
        self._url: URL | None = None
        self._headers: Headers | None = None
        self._query_params: QueryParams | None = None
        self._cookies: dict[str, str] | None = None
        self._body: bytes | None = None
        self._json: Any = _NOT_READ
        self._form: FormData | None = None
        self._stream_consumed = False
        self._priority_listeners: list[Callable[[Priority], None]] | None = None
        # Set by the stream driver while the request's stream can carry pushes.
        self._pusher: Pusher | None = None

    # -- priority ----------------------------------------------------------------

    def update_priority(self, priority: Priority) -> None:
        """A PRIORITY_UPDATE (or PRIORITY frame) arrived while the request runs:
        record it and tell whoever queued work for it (the engine moves the
        queued item to its new urgency)."""
        self.priority = priority
        if self._priority_listeners:
            for listener in list(self._priority_listeners):
                listener(priority)

    def on_priority_change(self, listener: Callable[[Priority], None]) -> Callable[[], None]:
        """Call ``listener(priority)`` on every later change; returns a remover."""
        if self._priority_listeners is None:
            self._priority_listeners = []
        self._priority_listeners.append(listener)
        listeners = self._priority_listeners

        def remove() -> None:
            if listener in listeners:
                listeners.remove(listener)

        return remove

    # -- server push ----------------------------------------------------------------

    @property
    def can_push(self) -> bool:
        """Whether ``push`` can work: HTTP/2 with push allowed by the client."""
        return self._pusher is not None and self._pusher.push_allowed()

    async def push(self, path: str, headers: Mapping[str, str] | None = None) -> bool:
        """Push a same-origin ``GET path`` to the client before it asks (HTTP/2
        server push): the server answers it like any request to this app, on
        a stream of its own. False when it cannot be pushed (HTTP/1.1, push
        disabled by the client, limits reached, or a path the client refused
        before); fetch or link it then."""
        if not path.startswith("/") or path.startswith("//"):
            raise ValueError(f"push needs a same-origin path starting with '/', got {path!r}")
        if self._pusher is None:
            return False
        raw = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]
        return self._pusher.push(path, raw)

    # -- request line and headers ---------------------------------------------

    @property
    def method(self) -> str:
        return self._event.method.upper()

    @property
    def http_version(self) -> str:
        return self._event.http_version

    @property
    def path(self) -> str:
        """The path without the query string, as sent (not percent-decoded)."""
        return self._event.target.partition("?")[0]

    @property
    def stream_id(self) -> int:
        return self._event.stream_id

    @property
    def client(self) -> Address | None:
        c = self._client
        if c is None or type(c) is Address:
            return c
        address = self._client = Address(*c)
        return address

    @property
    def state(self) -> State:
        """Per-request attribute bag (``request.state.user = ...``)."""
        if self._state is None:
            self._state = State()
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        self._state = value

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(raw=self._event.headers)
        return self._headers

    @property
    def url(self) -> URL:
        if self._url is None:
            ev = self._event
            path, _, query = ev.target.partition("?")
            netloc = ev.authority
            if not netloc:
                netloc = self.headers.get("host")
            if not netloc and self.server is not None:
                host, port = self.server
                if ":" in host:
                    host = f"[{host}]"
                default = 443 if ev.scheme == "https" else 80
                netloc = host if port == default else f"{host}:{port}"
            self._url = URL(scheme=ev.scheme, netloc=netloc or "", path=path, query=query)
        return self._url

    @property
    def base_url(self) -> URL:
        u = self.url
        return URL(scheme=u.scheme, netloc=u.netloc, path="/")

    @property
    def query_params(self) -> QueryParams:
        if self._query_params is None:
            self._query_params = QueryParams(self._event.target.partition("?")[2])
        return self._query_params

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            cookies: dict[str, str] = {}
            for header in self.headers.getlist("cookie"):
                cookies.update(parse_cookie_header(header))
            self._cookies = cookies
        return self._cookies

    # -- body -------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[bytes]:
        """The body in chunks as they arrive. After ``body()`` (or a previous
        full read through ``stream()`` that cached it) yields the cached body."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        if self._stream_consumed:
            raise RuntimeError("the request body was already streamed and not kept")
        self._stream_consumed = True
        async for chunk in self._stream:
            yield chunk

    async def body(self) -> bytes:
        if self._body is None:
            if self._stream_consumed:
                raise RuntimeError("the request body was already streamed and not kept")
            self._stream_consumed = True
            stream = self._stream
            first = await stream.read_chunk()
            if first is None:
                self._body = b""
            else:
                second = await stream.read_chunk()
                if second is None:
                    self._body = first  # the common case: the whole body in one chunk
                else:
                    chunks = [first, second]
                    while (chunk := await stream.read_chunk()) is not None:
                        chunks.append(chunk)
                    self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        """The body decoded as JSON; ``JSONDecodeError`` (a ``ValueError``) if it is not."""
        if self._json is _NOT_READ:
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
        return self._json

    def form(
        self,
        *,
        max_files: int = 1000,
        max_fields: int = 1000,
        max_part_size: int = 1024 * 1024,
        spool_max_size: int = 1024 * 1024,
    ) -> _FormContext:
        """The body parsed as ``multipart/form-data`` or
        ``application/x-www-form-urlencoded``; any other content type gives an
        empty form. Malformed bodies and exceeded limits raise
        ``MultiPartException`` (answer 400). Files roll from memory to disk past
        ``spool_max_size`` bytes. Use ``await request.form()`` or, to close
        the files at the end of a block, ``async with request.form() as form``."""
        return _FormContext(
            self._get_form(
                max_files=max_files,
                max_fields=max_fields,
                max_part_size=max_part_size,
                spool_max_size=spool_max_size,
            )
        )

    async def _get_form(
        self, *, max_files: int, max_fields: int, max_part_size: int, spool_max_size: int
    ) -> FormData:
        if self._form is None:
            content_type = self.headers.get("content-type", "")
            media_type = content_type.partition(";")[0].strip().lower()
            if media_type == "multipart/form-data":
                self._form = await parse_multipart(
                    content_type,
                    self.stream(),
                    max_files=max_files,
                    max_fields=max_fields,
                    max_part_size=max_part_size,
                    spool_max_size=spool_max_size,
                )
            elif media_type == "application/x-www-form-urlencoded":
                self._form = parse_urlencoded(await self.body(), max_fields=max_fields)
            else:
                self._form = FormData()
        return self._form

    async def close(self) -> None:
        """Close uploaded files (the driver calls this once the response is sent)."""
        if self._form is not None:
            await self._form.close()

    async def is_disconnected(self) -> bool:
        return self._stream.disconnected

    def url_for(self, name: str, /, **path_params: Any) -> URL:
        """The absolute URL of the route called ``name`` (the app resolves the path)."""
        url_path_for = getattr(self.app, "url_path_for", None)
        if url_path_for is None:
            raise RuntimeError("the app cannot build URLs (it has no url_path_for)")
        path = str(url_path_for(name, **path_params))
        base = self.base_url
        return URL(scheme=base.scheme, netloc=base.netloc, path=path)

    @property
    def body_stream(self) -> BodyStream:
        return self._stream

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._event.target!r} HTTP/{self.http_version}>"


class _FormContext:
    """What ``Request.form()`` returns: awaitable, and an async context manager
    that closes the uploaded files on exit (starlette's shape)."""

    __slots__ = ("_coro", "_form")

    def __init__(self, coro: Coroutine[Any, Any, FormData]) -> None:
        self._coro = coro
        self._form: FormData | None = None

    def __await__(self) -> Generator[Any, None, FormData]:
        return self._coro.__await__()

    async def __aenter__(self) -> FormData:
        self._form = await self._coro
        return self._form

    async def __aexit__(self, *exc: object) -> None:
        if self._form is not None:
            await self._form.close()


def parse_cookie_header(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header the way browsers send it, leniently (like
    starlette: ``http.cookies`` rejects too much of what real browsers send)."""
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        key, sep, val = chunk.partition("=")
        if not sep:
            # No "=": a value with an empty name, as Mozilla bug 169091 documents.
            key, val = "", key
        key, val = key.strip(), val.strip()
        if key or val:
            cookies[key] = _unquote(val)
    return cookies
