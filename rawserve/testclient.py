"""A TestClient for users' tests, used like FastAPI's: ``client.get("/")``
returns an ``httpx.Response``; ``with TestClient(app) as client:`` also runs
the app's startup and shutdown.

Unlike starlette's in-process transport, requests go through a real rawserve
``Server`` on an ephemeral 127.0.0.1 port, run by a background thread with an
event loop of its own: what the test sees is what a client would see.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rawserve.core.config import Config

if TYPE_CHECKING:
    import httpx

__all__ = ["TestClient"]

_START_TIMEOUT_S = 30.0


class _Pending:
    """Counts responses whose background work (background tasks, the exit of
    yield-dependencies) has not finished, so that a call returns only after
    it has: starlette's in-process client finishes it before returning, and
    FastAPI users' tests read what a background task wrote right after."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def track(self, response: Any) -> None:
        background = getattr(response, "background", None)
        if background is None:
            return
        with self._idle:
            self._count += 1

        async def run_then_signal() -> None:
            try:
                await background()
            finally:
                with self._idle:
                    self._count -= 1
                    self._idle.notify_all()

        response.background = run_then_signal

    def wait_idle(self, timeout_s: float) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._count == 0, timeout_s)


class _TestApp:
    """The app as the test server sees it: responses tracked by ``_Pending``,
    and, outside ``with``, no startup/shutdown (FastAPI's client serves
    requests without running the lifespan then, and so does this one)."""

    def __init__(self, app: Any, pending: _Pending, lifespan: bool) -> None:
        self._app = app
        self._pending = pending
        self._lifespan = lifespan

    async def handle(self, request: Any) -> Any:
        response = await self._app.handle(request)
        self._pending.track(response)
        return response

    async def startup(self) -> None:
        if self._lifespan:
            await self._app.startup()

    async def shutdown(self) -> None:
        if self._lifespan:
            await self._app.shutdown()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)


class _ErrorCatcher(logging.Handler):
    """Collects exceptions the server logs with a traceback (an unhandled
    exception in a handler becomes a 500 and a log record), so the test's
    thread can raise them, as starlette's ``raise_server_exceptions`` does."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.thread_id: int | None = None
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread_id or not record.exc_info:
            return
        exc = record.exc_info[1]
        if exc is not None:
            with self._lock:
                self.errors.append(exc)

    def take(self) -> BaseException | None:
        with self._lock:
            errors, self.errors = self.errors, []
        return errors[0] if errors else None


class _ServerThread:
    def __init__(self, app: Any, config: Config) -> None:
        self.app = app
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="rawserve-testclient", daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self._started.wait(_START_TIMEOUT_S):
            raise RuntimeError("the test server did not start in time")
        if self.error is not None:
            self.thread.join(_START_TIMEOUT_S)
            raise self.error

    def stop(self) -> None:
        if self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(_START_TIMEOUT_S)
        if not self.loop.is_closed() and not self.thread.is_alive():
            self.loop.close()
        if self.error is not None:
            raise self.error

    def stop_quietly(self) -> None:
        """For a client that was never closed: at garbage collection or exit."""
        if threading.current_thread() is self.thread:
            # Collected on the server's own thread: it cannot join itself.
            if self._stop is not None:
                self._stop.set()
            return
        try:
            self.stop()
        except BaseException:  # nobody is left to report it to
            logging.getLogger("rawserve.testclient").debug("test server stop failed", exc_info=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the test's thread
            self.error = exc
            self._started.set()

    async def _main(self) -> None:
        from rawserve.serving.server import Server

        self._stop = asyncio.Event()
        async with Server(self.app, self.config) as server:
            port = server.http_port
            if port is None:
                raise RuntimeError("the test server has no cleartext HTTP port")
            self.port = port
            self._started.set()
            await self._stop.wait()


class TestClient:
    """Requests to ``app`` over a real server; the API is ``httpx.Client``'s
    (``get``, ``post``, ..., ``request``, ``stream``, ``cookies``, ``headers``)."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        app: Any,
        base_url: str = "http://testserver",
        raise_server_exceptions: bool = True,
        root_path: str = "",
        cookies: Any = None,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = True,
        timeout: float = 30.0,
        config: Config | None = None,
    ) -> None:
        import httpx

        self.app = app
        self.base_url = base_url
        self.raise_server_exceptions = raise_server_exceptions
        self._config = config or Config(host="127.0.0.1", http_port=0, port=-1, quic_port=0)
        self._timeout_s = timeout
        self._pending = _Pending()
        self._catcher = _ErrorCatcher()
        self._entered = False
        self._client = httpx.Client(
            base_url=base_url + root_path,
            transport=_transport(weakref.ref(self)),
            cookies=cookies,
            headers={"user-agent": "testclient", **(headers or {})},
            follow_redirects=follow_redirects,
            timeout=timeout,
        )
        # What a client dropped without close() must still release: the
        # server thread and the pooled sockets (no ResourceWarning). Nothing
        # in here refers back to this object, so it can be collected.
        self._resources = _Resources(self._client)
        self._finalizer = weakref.finalize(self, self._resources.close_quietly)

    @property
    def _server(self) -> _ServerThread | None:
        return self._resources.server

    # -- lifecycle ----------------------------------------------------------------

    def _start(self, lifespan: bool) -> _ServerThread:
        server = _ServerThread(_TestApp(self.app, self._pending, lifespan), self._config)
        logging.getLogger("rawserve").addHandler(self._catcher)
        self._catcher.thread_id = None
        self._resources.server = server
        try:
            server.start()
        except BaseException:
            self._resources.server = None
            logging.getLogger("rawserve").removeHandler(self._catcher)
            raise
        self._catcher.thread_id = server.thread.ident
        return server

    def _ensure_server(self) -> _ServerThread:
        server = self._resources.server
        if server is None:
            return self._start(lifespan=False)
        return server

    def _stop(self) -> None:
        server, self._resources.server = self._resources.server, None
        if server is None:
            return
        try:
            server.stop()
        finally:
            logging.getLogger("rawserve").removeHandler(self._catcher)

    def __enter__(self) -> TestClient:
        if self._server is not None:
            self._stop()  # a lazily started server without lifespan
        self._start(lifespan=True)
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        self._stop()

    def close(self) -> None:
        self._stop()
        self._client.close()
        self._finalizer.detach()

    @property
    def port(self) -> int:
        """The port the test server listens on (starting it if needed)."""
        return self._ensure_server().port

    # -- requests -----------------------------------------------------------------

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self._client.request(method, url, **kwargs)
        self._pending.wait_idle(self._timeout_s)
        self._raise_server_exception()
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    @contextmanager
    def stream(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        with self._client.stream(method, url, **kwargs) as response:
            yield response
        self._pending.wait_idle(self._timeout_s)
        self._raise_server_exception()

    def _raise_server_exception(self) -> None:
        if not self.raise_server_exceptions:
            return
        exc = self._catcher.take()
        if exc is not None:
            raise exc

    def __getattr__(self, name: str) -> Any:
        # cookies, headers, params, auth, event_hooks ... as httpx.Client has them.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._client, name)


class _Resources:
    """The test server and the HTTP client of one TestClient."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.server: _ServerThread | None = None

    def close_quietly(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop_quietly()
        self.client.close()


def _transport(ref: weakref.ref[TestClient]) -> httpx.BaseTransport:
    import httpx

    class _Transport(httpx.BaseTransport):
        """Sends every request, whatever its host, to the test server, keeping
        the ``Host`` header (``testserver``) the app sees."""

        def __init__(self) -> None:
            self._inner = httpx.HTTPTransport()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            client = ref()
            if client is None:
                raise RuntimeError("the TestClient is gone")
            server = client._ensure_server()
            url = request.url.copy_with(scheme="http", host="127.0.0.1", port=server.port)
            forwarded = httpx.Request(
                request.method,
                url,
                headers=request.headers,
                stream=request.stream,
                extensions=request.extensions,
            )
            return self._inner.handle_request(forwarded)

        def close(self) -> None:
            self._inner.close()

    return _Transport()
