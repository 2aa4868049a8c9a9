"""The application: routes, middleware, exception handlers and lifespan,
behind one coroutine the stream driver calls for every request,
``await app.handle(request) -> Response``, which never raises.

Layers, outermost first, as in starlette: user middleware (the last added
runs first) around the exception handlers around the router. An exception no
handler claims becomes a 500 outside the middleware, logged with its
traceback on ``rawserve.applications``; the client sees only the plain
text ``Internal Server Error``, as from FastAPI.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import traceback
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

from rawserve.core.errors import BodyTooLarge, ClientDisconnected
from rawserve.core.priority import DEFAULT_PRIORITY, Priority
from rawserve.datastructures import State
from rawserve.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
    server_error_response,
)
from rawserve.exceptions import HTTPException, RequestValidationError
from rawserve.openapi import docs
from rawserve.openapi.utils import get_openapi
from rawserve.requests import JSONDecodeError, Request
from rawserve.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from rawserve.routetable import RouteTable
from rawserve.routing import (
    DEFAULT_JSON,
    DEFAULT_TRUE,
    ON_EVENT_DEPRECATED,
    APIRoute,
    APIRouter,
)

__all__ = ["RawServe"]

log = logging.getLogger("rawserve.applications")

DecoratedCallable = TypeVar("DecoratedCallable", bound=Callable[..., Any])
Handler = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Any], Any]


# -- rawserve's own exception handlers ---------------------------------------------


async def _body_too_large(request: Request, exc: BodyTooLarge) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=413)


async def _client_disconnected(request: Request, exc: ClientDisconnected) -> Response:
    # Nobody is listening; the driver drops this.
    return Response(status_code=499)


async def _bad_json(request: Request, exc: JSONDecodeError) -> Response:
    # A handler's own ``await request.json()`` failed: the client's fault, not a 500.
    return JSONResponse(
        {"detail": f"Invalid JSON: {exc.msg} at position {exc.pos}"}, status_code=400
    )


_DEFAULT_HANDLERS: dict[Any, ExceptionHandler] = {
    HTTPException: http_exception_handler,
    RequestValidationError: request_validation_exception_handler,
    BodyTooLarge: _body_too_large,
    ClientDisconnected: _client_disconnected,
    JSONDecodeError: _bad_json,
}


def _is_async_callable(obj: Any) -> bool:
    while hasattr(obj, "func") and callable(getattr(obj, "func", None)):
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004
    )


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _lifespan_context(lifespan: Callable[[Any], Any], app: Any) -> Any:
    if inspect.isasyncgenfunction(lifespan):
        return contextlib.asynccontextmanager(lifespan)(app)
    if inspect.isgeneratorfunction(lifespan):
        return _AsyncLift(contextlib.contextmanager(lifespan)(app))
    return lifespan(app)


class _AsyncLift:
    """A sync context manager used where an async one is expected."""

    def __init__(self, cm: Any) -> None:
        self._cm = cm

    async def __aenter__(self) -> Any:
        return self._cm.__enter__()

    async def __aexit__(self, *exc_info: Any) -> Any:
        return self._cm.__exit__(*exc_info)


class RawServe:
    """The application. FastAPI's constructor arguments are accepted; the
    OpenAPI document is served at ``openapi_url``, Swagger UI at ``docs_url``
    and ReDoc at ``redoc_url`` (``None`` turns each off). The pages' scripts
    and styles come from FastAPI's default CDN URLs unless ``swagger_js_url``,
    ``swagger_css_url``, ``swagger_favicon_url``, ``redoc_js_url`` or
    ``redoc_favicon_url`` point elsewhere (local copies, on a box offline)."""

    def __init__(
        self,
        *,
        debug: bool = False,
        title: str = "RawServe",
        summary: str | None = None,
        description: str = "",
        version: str = "0.1.0",
        dependencies: Sequence[Any] | None = None,
        default_response_class: Any = DEFAULT_JSON,
        redirect_slashes: bool = True,
        exception_handlers: Mapping[Any, ExceptionHandler] | None = None,
        on_startup: Sequence[Callable[[], Any]] | None = None,
        on_shutdown: Sequence[Callable[[], Any]] | None = None,
        lifespan: Callable[[Any], Any] | None = None,
        priority: int | Priority | None = None,
        strict_content_type: Any = DEFAULT_TRUE,
        root_path: str = "",
        openapi_url: str | None = "/openapi.json",
        openapi_tags: list[dict[str, Any]] | None = None,
        servers: list[dict[str, Any]] | None = None,
        docs_url: str | None = "/docs",
        redoc_url: str | None = "/redoc",
        swagger_ui_oauth2_redirect_url: str | None = "/docs/oauth2-redirect",
        swagger_ui_init_oauth: dict[str, Any] | None = None,
        swagger_ui_parameters: dict[str, Any] | None = None,
        terms_of_service: str | None = None,
        contact: dict[str, Any] | None = None,
        license_info: dict[str, Any] | None = None,
        openapi_external_docs: dict[str, Any] | None = None,
        swagger_js_url: str = docs.SWAGGER_JS_URL,
        swagger_css_url: str = docs.SWAGGER_CSS_URL,
        swagger_favicon_url: str = docs.SWAGGER_FAVICON_URL,
        redoc_js_url: str = docs.REDOC_JS_URL,
        redoc_favicon_url: str = docs.REDOC_FAVICON_URL,
        **extra: Any,
    ) -> None:
        self.debug = debug
        self.title = title
        self.summary = summary
        self.description = description
        self.version = version
        self.root_path = root_path
        self.extra = extra
        self.router = APIRouter(
            dependencies=dependencies,
            default_response_class=default_response_class,
            on_startup=on_startup,
            on_shutdown=on_shutdown,
            lifespan=lifespan,
            priority=priority,
            strict_content_type=strict_content_type,
            redirect_slashes=redirect_slashes,
        )
        self.state = State()
        self.dependency_overrides: dict[Callable[..., Any], Callable[..., Any]] = {}
        self.exception_handlers: dict[Any, ExceptionHandler] = dict(_DEFAULT_HANDLERS)
        self.exception_handlers.update(exception_handlers or {})
        self.user_middleware: list[Callable[[Request, Handler], Awaitable[Response]]] = []
        self._entry: Handler | None = None
        self._table = RouteTable([])
        self._table_version = -1
        self._table_len = -1
        self._lifespan_stack: contextlib.AsyncExitStack | None = None
        self._lifespan_state: dict[str, Any] = {}
        self.openapi_version = "3.1.0"
        self.openapi_url = openapi_url
        self.openapi_tags = openapi_tags
        self.servers = list(servers or [])
        self.docs_url = docs_url
        self.redoc_url = redoc_url
        self.swagger_ui_oauth2_redirect_url = swagger_ui_oauth2_redirect_url
        self.swagger_ui_init_oauth = swagger_ui_init_oauth
        self.swagger_ui_parameters = swagger_ui_parameters
        self.terms_of_service = terms_of_service
        self.contact = contact
        self.license_info = license_info
        self.openapi_external_docs = openapi_external_docs
        self.swagger_js_url = swagger_js_url
        self.swagger_css_url = swagger_css_url
        self.swagger_favicon_url = swagger_favicon_url
        self.redoc_js_url = redoc_js_url
        self.redoc_favicon_url = redoc_favicon_url
        self.openapi_schema: dict[str, Any] | None = None
        if self.openapi_url:
            assert self.title, "A title must be provided for OpenAPI, e.g.: 'My API'"
            assert self.version, "A version must be provided for OpenAPI, e.g.: '2.1.0'"
        self.setup()

    # -- OpenAPI and the docs pages (FastAPI's) -------------------------------------------

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, made on first use and kept in ``openapi_schema``."""
        if not self.openapi_schema:
            self.openapi_schema = get_openapi(
                title=self.title,
                version=self.version,
                openapi_version=self.openapi_version,
                summary=self.summary,
                description=self.description,
                terms_of_service=self.terms_of_service,
                contact=self.contact,
                license_info=self.license_info,
                routes=self.routes,
                tags=self.openapi_tags,
                servers=self.servers,
                external_docs=self.openapi_external_docs,
            )
        return self.openapi_schema

    def setup(self) -> None:
        """Add the routes of the document and the docs pages."""
        if not self.openapi_url:
            return
        openapi_url = self.openapi_url

        async def openapi(request: Request) -> Response:
            root_path = self.root_path.rstrip("/")
            schema = self.openapi()
            if root_path and not self.servers and not schema.get("servers"):
                schema = {**schema, "servers": [{"url": root_path}]}
            return JSONResponse(schema)

        self.add_route(openapi_url, openapi, include_in_schema=False)
        if self.docs_url:
            oauth2_redirect_url = self.swagger_ui_oauth2_redirect_url

            async def swagger_ui_html(request: Request) -> Response:
                return docs.get_swagger_ui_html(
                    openapi_url=self.root_path + openapi_url,
                    title=f"{self.title} - Swagger UI",
                    swagger_js_url=self.swagger_js_url,
                    swagger_css_url=self.swagger_css_url,
                    swagger_favicon_url=self.swagger_favicon_url,
                    oauth2_redirect_url=(
                        self.root_path + oauth2_redirect_url if oauth2_redirect_url else None
                    ),
                    init_oauth=self.swagger_ui_init_oauth,
                    swagger_ui_parameters=self.swagger_ui_parameters,
                )

            self.add_route(self.docs_url, swagger_ui_html, include_in_schema=False)
            if oauth2_redirect_url:

                async def swagger_ui_redirect(request: Request) -> Response:
                    return docs.get_swagger_ui_oauth2_redirect_html()

                self.add_route(oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)
        if self.redoc_url:

            async def redoc_html(request: Request) -> Response:
                return docs.get_redoc_html(
                    openapi_url=self.root_path + openapi_url,
                    title=f"{self.title} - ReDoc",
                    redoc_js_url=self.redoc_js_url,
                    redoc_favicon_url=self.redoc_favicon_url,
                )

            self.add_route(self.redoc_url, redoc_html, include_in_schema=False)

    # -- registration (delegated to the router) ---------------------------------------------

    @property
    def routes(self) -> list[APIRoute]:
        return self.router.routes

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> APIRoute:
        return self.router.add_api_route(path, endpoint, **kwargs)

    def api_route(
        self, path: str, **kwargs: Any
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.api_route(path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.post(path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.put(path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.patch(path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.delete(path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.options(path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.head(path, **kwargs)

    def trace(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.trace(path, **kwargs)

    def add_route(
        self,
        path: str,
        endpoint: Callable[[Any], Any],
        methods: Sequence[str] | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> APIRoute:
        return self.router.add_route(path, endpoint, methods, name, include_in_schema)

    def route(
        self,
        path: str,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.router.route(path, methods, name, include_in_schema)

    def include_router(self, router: APIRouter, **kwargs: Any) -> None:
        self.router.include_router(router, **kwargs)

    def url_path_for(self, name: str, /, **path_params: Any) -> str:
        return self.router.url_path_for(name, **path_params)

    def on_event(self, event_type: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
        """Deprecated, as in FastAPI: use ``lifespan``."""
        warnings.warn(ON_EVENT_DEPRECATED, DeprecationWarning, stacklevel=2)

        def decorator(func: DecoratedCallable) -> DecoratedCallable:
            self.router.add_event_handler(event_type, func)
            return func

        return decorator

    def add_event_handler(self, event_type: str, func: Callable[[], Any]) -> None:
        self.router.add_event_handler(event_type, func)

    def add_exception_handler(
        self, exc_class_or_status_code: int | type[BaseException], handler: ExceptionHandler
    ) -> None:
        self.exception_handlers[exc_class_or_status_code] = handler

    def exception_handler(
        self, exc_class_or_status_code: int | type[BaseException]
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        def decorator(func: DecoratedCallable) -> DecoratedCallable:
            self.add_exception_handler(exc_class_or_status_code, func)
            return func

        return decorator

    def middleware(self, middleware_type: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
        """``@app.middleware("http")`` on ``async def mw(request, call_next)``;
        the last one added runs first."""
        if middleware_type != "http":
            raise ValueError(f"only 'http' middleware is supported, not {middleware_type!r}")

        def decorator(func: DecoratedCallable) -> DecoratedCallable:
            self.user_middleware.append(func)
            self._entry = None
            return func

        return decorator

    def add_middleware(self, middleware_class: Any, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "rawserve has no ASGI layer, so ASGI middleware classes cannot be added; "
            'write the middleware as @app.middleware("http") async def mw(request, call_next)'
        )

    # -- lifespan -------------------------------------------------------------------------

    async def startup(self) -> None:
        """Enter the lifespan context(s), then run the startup handlers in order."""
        if self._lifespan_stack is not None:
            raise RuntimeError("the app is already started")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            for lifespan in self.router.lifespans:
                state = await stack.enter_async_context(_lifespan_context(lifespan, self))
                if state:
                    self._lifespan_state.update(state)
            for handler in self.router.on_startup:
                await _call(handler)
        except BaseException:
            await stack.aclose()
            raise
        self._lifespan_stack = stack

    async def shutdown(self) -> None:
        """Run the shutdown handlers in order, then leave the lifespan context(s)."""
        stack, self._lifespan_stack = self._lifespan_stack, None
        try:
            for handler in self.router.on_shutdown:
                await _call(handler)
        finally:
            if stack is not None:
                await stack.aclose()

    # -- requests -------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """The response to ``request``. Never raises (except cancellation)."""
        if request.app is None:
            request.app = self
        if self._lifespan_state:
            for key, value in self._lifespan_state.items():
                setattr(request.state, key, value)
        entry = self._entry
        if entry is None:
            entry = self._entry = self._build_middleware()
        try:
            return await entry(request)
        except Exception as exc:
            return await self._server_error(request, exc)

    def _build_middleware(self) -> Handler:
        call: Handler = self._dispatch
        for mw in self.user_middleware:
            call = _bind_middleware(mw, call)
        return call

    async def _dispatch(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except Exception as exc:
            handler = self._lookup_handler(exc)
            if handler is None:
                raise
            response: Response = await _call(handler, request, exc)
            return response

    async def _route(self, request: Request) -> Response:
        router = self.router
        if self._table_version != router._version or self._table_len != len(router.routes):
            self._table = RouteTable(router.routes)
            self._table_version = router._version
            self._table_len = len(router.routes)
        raw_path = request.path
        path = unquote(raw_path) if "%" in raw_path else raw_path
        route, path_params, allowed = self._table.lookup(request.method, path)
        if route is None:
            if allowed:
                raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
            if router.redirect_slashes and path != "/":
                other = path.rstrip("/") if path.endswith("/") else path + "/"
                if other and self._table.matches_any(other):
                    target = raw_path.rstrip("/") if raw_path.endswith("/") else raw_path + "/"
                    return RedirectResponse(str(request.url.replace(path=target)))
            raise HTTPException(404)
        request.path_params = path_params
        request.route = route
        if route.priority is not None and request.priority is DEFAULT_PRIORITY:
            request.priority = route.priority
        return await route.handle(request, self.dependency_overrides)

    def _lookup_handler(self, exc: Exception) -> ExceptionHandler | None:
        handlers = self.exception_handlers
        # A 500 handler is the server-error handler (outside the middleware),
        # as in starlette; an HTTPException(500) gets the ordinary treatment.
        if isinstance(exc, HTTPException) and exc.status_code != 500:
            handler = handlers.get(exc.status_code)
            if handler is not None:
                return handler
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                return handler if cls is not Exception else None
        return None

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        log.error("Exception in handler for %s %s", request.method, request.path, exc_info=exc)
        handler = self.exception_handlers.get(500) or self.exception_handlers.get(Exception)
        if handler is not None:
            try:
                response: Response = await _call(handler, request, exc)
                return response
            except Exception:
                log.exception("the 500 exception handler failed")
        if self.debug:
            text = "".join(traceback.format_exception(exc))
            return PlainTextResponse(text, status_code=500)
        return server_error_response()

    def __repr__(self) -> str:
        return f"<RawServe {self.title!r} routes={len(self.routes)}>"


def _bind_middleware(
    mw: Callable[[Request, Handler], Awaitable[Response]], call_next: Handler
) -> Handler:
    async def call(request: Request) -> Response:
        return await mw(request, call_next)

    return call
