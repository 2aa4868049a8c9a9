"""Routes and routers, starlette style: ``APIRoute.matches`` answers
NONE/PARTIAL/FULL so 404 and 405 fall out, and ``APIRouter``'s decorators only
register (path templates compile in ``rawserve.convertors``).

Everything that can be decided from the handler's signature is decided when
the route is created (``dependencies.utils.get_dependant``), so a request does
the least work: look up, bind, call, serialize.
"""

from __future__ import annotations

import enum
import inspect
import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import orjson

from rawserve.background import BackgroundTask
from rawserve.concurrency import run_sync
from rawserve.convertors import StringConvertor, compile_path
from rawserve.core.errors import BodyTooLarge, ClientDisconnected
from rawserve.core.priority import Priority
from rawserve.dependencies.models import ASYNC, ASYNC_GEN, GEN, Dependant, Field, call_kind
from rawserve.dependencies.solving import SolveContext, extract_form, solve
from rawserve.dependencies.utils import get_dependant, should_embed
from rawserve.encoders import dumps, jsonable_encoder
from rawserve.exceptions import (
    FastAPIError,
    HTTPException,
    RequestValidationError,
)
from rawserve.params import DependsParam
from rawserve.responses import JSONResponse, Response, StreamingResponse
from rawserve.serialization import ResponseModel, json_lines, json_lines_async, stream_item_type
from rawserve.validation.annotations import lenient_issubclass, strip_annotated
from rawserve.validation.builder import needs_pydantic, type_hints
from rawserve.validation.pydantic_bridge import is_pydantic_model, pydantic_module

__all__ = [
    "APIRoute",
    "APIRouter",
    "Match",
    "compile_path",
]

T = TypeVar("T")

# FastAPI's words (its on_event is marked @deprecated).
ON_EVENT_DEPRECATED = (
    "on_event is deprecated, use lifespan event handlers instead. Read more about it in "
    "the FastAPI docs for Lifespan Events: https://fastapi.tiangolo.com/advanced/events/"
)
DecoratedCallable = TypeVar("DecoratedCallable", bound=Callable[..., Any])


class Match(enum.IntEnum):
    NONE = 0
    PARTIAL = 1  # the path matches, the method does not: 405 if nothing matches fully
    FULL = 2


class DefaultPlaceholder(Generic[T]):
    """A value the user did not choose, so an enclosing router's may win."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __bool__(self) -> bool:
        return bool(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DefaultPlaceholder) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


DEFAULT_JSON: Any = DefaultPlaceholder(JSONResponse)
DEFAULT_TRUE: Any = DefaultPlaceholder(True)
DEFAULT_NONE: Any = DefaultPlaceholder(None)


def _value_or_default(*candidates: Any) -> Any:
    """The first value not a placeholder, else the first placeholder's value."""
    for c in candidates:
        if not isinstance(c, DefaultPlaceholder):
            return c
    first = candidates[0]
    return first.value if isinstance(first, DefaultPlaceholder) else first


# -- one route -------------------------------------------------------------------

_NO_BODY_STATUS = frozenset({204, 205, 304})


def body_allowed(status: int | None) -> bool:
    return status is None or not (status < 200 or status in _NO_BODY_STATUS)


def _json_content_type(value: str) -> bool:
    if value == "application/json":
        return True
    media = value.partition(";")[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    # orjson is stricter than the json module FastAPI uses (NaN, huge ints);
    # the json module also gives the error position FastAPI reports.
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ],
            body=exc.doc,
        ) from None
    except ValueError as exc:  # undecodable bytes
        raise HTTPException(400, "There was an error parsing the body") from exc


def _to_priority(value: int | Priority | None) -> Priority | None:
    if value is None or isinstance(value, Priority):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Priority(urgency=value)
    raise TypeError(f"priority must be an urgency 0..7 or a Priority, not {value!r}")


class _AfterResponse:
    """Runs the response's background tasks, then closes the request's
    yield-dependencies: FastAPI's order (cleanup after the response is sent)."""

    __slots__ = ("background", "stacks")

    def __init__(self, background: BackgroundTask | None, stacks: list[Any]) -> None:
        self.background = background
        self.stacks = stacks

    async def __call__(self) -> None:
        try:
            if self.background is not None:
                await self.background()
        finally:
            for stack in self.stacks:
                await stack.aclose()


class APIRoute:
    """A path operation: a path template, methods and a handler whose
    parameters are bound from the request.

    ``priority`` is the route's default urgency: a request whose client sent
    no priority signal (its ``request.priority`` is the ``DEFAULT_PRIORITY``
    object) gets it before the handler runs."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str] | set[str] | None = None,
        status_code: int | None = None,
        response_model: Any = DEFAULT_NONE,
        response_class: Any = DEFAULT_JSON,
        dependencies: Sequence[Any] | None = None,
        tags: list[Any] | None = None,
        name: str | None = None,
        priority: int | Priority | None = None,
        strict_content_type: Any = DEFAULT_TRUE,
        summary: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
        raw: bool = False,
        **extra: Any,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"a route path must start with '/', got {path!r}")
        if not callable(endpoint):
            raise TypeError(f"an endpoint must be callable, got {endpoint!r}")
        self.path = path
        self.endpoint = endpoint
        self.name = (
            name if name is not None else getattr(endpoint, "__name__", type(endpoint).__name__)
        )
        self.tags = list(tags or [])
        self.summary = summary
        # FastAPI's: the docstring without its indentation, up to a form feed.
        doc = getattr(endpoint, "__doc__", None) or ""
        self.description = description or inspect.cleandoc(doc).split("\f")[0]
        self.include_in_schema = include_in_schema
        self.extra = extra
        self.raw = raw
        self.path_regex, self.path_format, self.param_convertors = compile_path(path)
        self.param_names = frozenset(self.param_convertors)
        self._convert = {
            k: c for k, c in self.param_convertors.items() if not isinstance(c, StringConvertor)
        }
        self.is_static = not self.param_convertors
        self.methods = {m.upper() for m in (methods or ["GET"])}
        if "GET" in self.methods:
            # HEAD answers like GET; the driver sends no body.
            self.methods.add("HEAD")
        self.status_code = int(status_code) if status_code is not None else None
        self.priority = _to_priority(priority)
        self.dependencies = list(dependencies or [])
        self.response_class: type[Response] = _value_or_default(response_class)
        self.default_json = isinstance(response_class, DefaultPlaceholder) and (
            self.response_class is JSONResponse
        )
        self.strict_content_type = bool(_value_or_default(strict_content_type))
        self.response_model_arg = response_model
        self.kwargs: dict[str, Any] = dict(extra)
        # A path operation that yields streams what it yields (FastAPI 0.134):
        # JSON Lines, or the chunks themselves with a StreamingResponse class.
        self.is_stream = not raw and call_kind(endpoint) in (GEN, ASYNC_GEN)
        self.response_model = self._response_model(response_model, extra)
        self.dependant = self._build_dependant()
        flat = self.dependant.flat_body()
        self.flat_body = flat
        self.embed = should_embed(flat)
        self.is_form = any(f.is_form for f in flat)
        self.fast_json = self._fast_json(flat)
        d = self.dependant
        self.is_coroutine = d.kind == ASYNC
        self._trivial = not (
            d.dependencies or d.params or d.body or d.background_name or d.response_name
        )

    def _build_dependant(self) -> Dependant:
        dep = get_dependant(self.endpoint, self.param_names) if not self.raw else None
        if dep is None:
            dep = Dependant(self.endpoint)
            dep.request_name = "request"
        # Route-level dependencies run first, their values discarded.
        extra = [
            get_dependant(
                d.dependency, self.param_names, name=None, use_cache=d.use_cache, scope=d.scope
            )
            for d in self.dependencies
            if isinstance(d, DependsParam) and d.dependency is not None
        ]
        dep.dependencies[:0] = extra
        return dep

    def _response_model(self, arg: Any, extra: dict[str, Any]) -> ResponseModel | None:
        explicit = not isinstance(arg, DefaultPlaceholder)
        model = arg if explicit else None
        if not explicit and not self.raw:
            ret = type_hints(self.endpoint).get("return") if callable(self.endpoint) else None
            # FastAPI validates against any return annotation; only one that
            # filters (a model or dataclass inside) changes the result, so only
            # those pay for validation here.
            if ret is not None and self.is_stream:
                ret = stream_item_type(ret)
            if ret is not None and not lenient_issubclass(ret, Response) and needs_pydantic(ret):
                model = ret
        if model is None or pydantic_module() is None:
            return None
        if not body_allowed(self.status_code):
            raise ValueError(f"status code {self.status_code} must not have a response body")
        try:
            return ResponseModel(model, extra)
        except Exception as exc:
            raise FastAPIError(
                f"Invalid args for response field! Hint: check that {model} is a valid "
                "Pydantic field type. If you are using a return type annotation that is not "
                "a valid Pydantic field (e.g. Union[Response, dict, None]) you can disable "
                "generating the response model from the type annotation with the path "
                "operation decorator parameter response_model=None. Read more: "
                "https://fastapi.tiangolo.com/tutorial/response-model/"
            ) from exc

    def _fast_json(self, flat: list[Field]) -> Callable[[bytes], Any] | None:
        if self.embed or len(flat) != 1 or self.is_form:
            return None
        model = strip_annotated(flat[0].annotation)
        if not is_pydantic_model(model) or flat[0].annotation is not model:
            return None
        validate_json: Callable[[bytes], Any] = model.model_validate_json
        return validate_json

    # -- matching ------------------------------------------------------------------

    def matches(self, method: str, path: str) -> tuple[Match, dict[str, Any]]:
        m = self.path_regex.match(path)
        if m is None:
            return Match.NONE, {}
        values: dict[str, Any] = m.groupdict()
        for key, conv in self._convert.items():
            values[key] = conv.convert(values[key])
        if method not in self.methods:
            return Match.PARTIAL, values
        return Match.FULL, values

    def url_path_for(self, **path_params: Any) -> str:
        missing = self.param_names - set(path_params)
        if missing:
            raise KeyError(f"missing path parameter(s) {', '.join(sorted(missing))}")
        path = self.path_format
        for key, conv in self.param_convertors.items():
            path = path.replace("{" + key + "}", conv.to_string(path_params[key]))
        return path

    # -- handling ----------------------------------------------------------------

    async def handle(self, request: Any, overrides: dict[Any, Any] | None = None) -> Response:
        """Bind, call, serialize. Raises HTTPException, RequestValidationError
        and whatever the handler raises; the app turns them into responses."""
        if self._trivial:
            name = self.dependant.request_name
            if not name:
                if self.is_stream:
                    return self._stream(self.endpoint(), None)
                raw = (
                    await self.endpoint()
                    if self.is_coroutine
                    else await run_sync(self.endpoint, {})
                )
                return self._serialize(raw, None)
            if self.is_coroutine and not self.is_stream:
                # ``async def f(request: Request)``: nothing to solve, so no
                # context to keep (no dependencies, background or sub-response).
                return self._serialize(await self.endpoint(**{name: request}), None)
        ctx = SolveContext(request, overrides, self.embed)
        ctx.path_names = self.param_names
        try:
            if self.flat_body:
                await self._read_body(request, ctx)
            values: dict[str, Any]
            if self._trivial:
                assert self.dependant.request_name is not None
                values = {self.dependant.request_name: request}
            else:
                values = await solve(self.dependant, ctx)
                if ctx.errors:
                    raise RequestValidationError(ctx.errors, body=ctx.body)
            if self.is_stream:
                response = self._stream(self.endpoint(**values), ctx)
            else:
                if self.is_coroutine:
                    raw = await self.endpoint(**values)
                else:
                    raw = await run_sync(self.endpoint, values)
                response = self._serialize(raw, ctx)
        except BaseException as exc:
            await _unwind(ctx, exc)
            raise
        stacks = []
        if ctx.function_stack is not None:
            if self.is_stream:
                # The function has not run yet: its dependencies stay open
                # until the stream has ended.
                stacks.append(ctx.function_stack)
            else:
                await ctx.function_stack.aclose()
        if ctx.stack is not None:
            stacks.append(ctx.stack)
        if stacks:
            response.background = BackgroundTask(_AfterResponse(response.background, stacks))
        return response

    async def _read_body(self, request: Any, ctx: SolveContext) -> None:
        if self.is_form:
            try:
                form = await request.form()
            except (BodyTooLarge, ClientDisconnected, HTTPException):
                raise
            except Exception as exc:
                raise HTTPException(400, "There was an error parsing the body") from exc
            ctx.body = await extract_form(self.flat_body, form, self.embed)
            return
        raw = await request.body()
        if not raw:
            return
        content_type = request.headers.get("content-type")
        if content_type is None:
            is_json = not self.strict_content_type
        else:
            is_json = _json_content_type(content_type)
        if not is_json:
            ctx.body = raw
            return
        if self.fast_json is not None:
            try:
                ctx.fast_body = self.fast_json(raw)
                return
            except Exception:
                pass  # the slow path below reports FastAPI's exact errors
        ctx.body = _parse_json(raw)

    def _serialize(self, raw: Any, ctx: SolveContext | None) -> Response:
        background = ctx.background if ctx is not None else None
        if isinstance(raw, Response):
            if raw.background is None and background is not None:
                raw.background = background
            return raw
        status = self.status_code
        sub = ctx.response if ctx is not None else None
        if sub is not None and sub.status_code:
            status = sub.status_code
        rm = self.response_model
        response: Response
        if self.default_json:
            if rm is not None:
                response = Response(
                    rm.json(raw),
                    status_code=status or 200,
                    media_type="application/json",
                    background=background,
                )
            else:
                response = JSONResponse(raw, status_code=status or 200, background=background)
        else:
            content = rm.python(raw) if rm is not None else jsonable_encoder(raw)
            kwargs: dict[str, Any] = {"background": background}
            if status is not None:
                kwargs["status_code"] = status
            response = self.response_class(content, **kwargs)
        if not body_allowed(response.status_code):
            response.body = b""
        if sub is not None:
            response.raw_headers().extend(sub.raw_headers())
        return response

    def _stream(self, content: Any, ctx: SolveContext | None) -> Response:
        """The response to a path operation that yields."""
        sub = ctx.response if ctx is not None else None
        status = self.status_code or 200
        if sub is not None and sub.status_code:
            status = sub.status_code
        background = ctx.background if ctx is not None else None
        response: Response
        if not self.default_json and lenient_issubclass(self.response_class, StreamingResponse):
            response = self.response_class(content, status_code=status, background=background)
        else:
            rm = self.response_model
            encode = rm.json if rm is not None else dumps
            lines = json_lines_async if inspect.isasyncgen(content) else json_lines
            response = StreamingResponse(
                lines(content, encode),
                status_code=status,
                media_type="application/jsonl",
                background=background,
            )
        if sub is not None:
            response.raw_headers().extend(sub.raw_headers())
        return response

    def __repr__(self) -> str:
        methods = ", ".join(sorted(self.methods))
        return f"{type(self).__name__}(path={self.path!r}, name={self.name!r}, methods=[{methods}])"


async def _unwind(ctx: SolveContext, exc: BaseException) -> None:
    """Close yield-dependencies with the exception, so their ``except`` sees it."""
    for stack in (ctx.function_stack, ctx.stack):
        if stack is not None:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)


# -- routers ----------------------------------------------------------------------


class APIRouter:
    """A group of routes with a common prefix, tags, dependencies and defaults;
    included into an app (or another router) with ``include_router``."""

    def __init__(
        self,
        *,
        prefix: str = "",
        tags: list[Any] | None = None,
        dependencies: Sequence[Any] | None = None,
        default_response_class: Any = DEFAULT_JSON,
        responses: dict[Any, Any] | None = None,
        on_startup: Sequence[Callable[[], Any]] | None = None,
        on_shutdown: Sequence[Callable[[], Any]] | None = None,
        lifespan: Callable[[Any], Any] | None = None,
        deprecated: bool | None = None,
        include_in_schema: bool = True,
        priority: int | Priority | None = None,
        strict_content_type: Any = DEFAULT_TRUE,
        redirect_slashes: bool = True,
        **ignored: Any,
    ) -> None:
        if prefix:
            if not prefix.startswith("/"):
                raise ValueError("a path prefix must start with '/'")
            if prefix.endswith("/"):
                raise ValueError("a path prefix must not end with '/'")
        self.prefix = prefix
        self.tags = list(tags or [])
        self.dependencies = list(dependencies or [])
        self.default_response_class = default_response_class
        self.responses = dict(responses or {})
        self.on_startup: list[Callable[[], Any]] = list(on_startup or [])
        self.on_shutdown: list[Callable[[], Any]] = list(on_shutdown or [])
        self.lifespans: list[Callable[[Any], Any]] = [lifespan] if lifespan is not None else []
        self.deprecated = deprecated
        self.include_in_schema = include_in_schema
        self.priority = _to_priority(priority)
        self.strict_content_type = strict_content_type
        self.redirect_slashes = redirect_slashes
        self.routes: list[APIRoute] = []
        self._version = 0

    # -- registration ----------------------------------------------------------------

    def add_api_route(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str] | set[str] | None = None,
        response_class: Any = DEFAULT_JSON,
        dependencies: Sequence[Any] | None = None,
        tags: list[Any] | None = None,
        priority: int | Priority | None = None,
        strict_content_type: Any = DEFAULT_TRUE,
        **kwargs: Any,
    ) -> APIRoute:
        # The router's documentation defaults, merged as FastAPI merges them.
        if self.responses or kwargs.get("responses"):
            kwargs["responses"] = {**self.responses, **(kwargs.get("responses") or {})}
        if self.deprecated and kwargs.get("deprecated") is None:
            kwargs["deprecated"] = True
        if not self.include_in_schema:
            kwargs["include_in_schema"] = False
        route = APIRoute(
            self.prefix + path,
            endpoint,
            methods=methods,
            response_class=_keep_default(response_class, self.default_response_class),
            dependencies=[*self.dependencies, *(dependencies or [])],
            tags=[*self.tags, *(tags or [])],
            priority=priority if priority is not None else self.priority,
            strict_content_type=_keep_default(strict_content_type, self.strict_content_type),
            **kwargs,
        )
        route.kwargs.update(
            methods=methods,
            dependencies=list(dependencies or []),
            tags=list(tags or []),
            priority=priority,
            response_class=response_class,
            strict_content_type=strict_content_type,
        )
        self.routes.append(route)
        self._version += 1
        return route

    def api_route(
        self, path: str, *, methods: Sequence[str] | None = None, **kwargs: Any
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        def decorator(func: DecoratedCallable) -> DecoratedCallable:
            self.add_api_route(path, func, methods=methods, **kwargs)
            return func

        return decorator

    def get(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.api_route(path, methods=["GET"], **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.api_route(path, methods=["POST"], **kwargs)

    def put(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.api_route(path, methods=["PUT"], **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.api_route(path, methods=["PATCH"], **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.api_route(path, methods=["DELETE"], **kwargs)

    def options(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.api_route(path, methods=["OPTIONS"], **kwargs)

    def head(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.api_route(path, methods=["HEAD"], **kwargs)

    def trace(self, path: str, **kwargs: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self.api_route(path, methods=["TRACE"], **kwargs)

    def add_route(
        self,
        path: str,
        endpoint: Callable[[Any], Any],
        methods: Sequence[str] | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> APIRoute:
        """A starlette-style route: ``endpoint(request)`` returns a Response."""
        route = APIRoute(
            self.prefix + path,
            endpoint,
            methods=methods,
            name=name,
            include_in_schema=include_in_schema,
            raw=True,
        )
        route.kwargs.update(methods=methods, raw=True)
        self.routes.append(route)
        self._version += 1
        return route

    def route(
        self,
        path: str,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        def decorator(func: DecoratedCallable) -> DecoratedCallable:
            self.add_route(
                path, func, methods=methods, name=name, include_in_schema=include_in_schema
            )
            return func

        return decorator

    def include_router(
        self,
        router: APIRouter,
        *,
        prefix: str = "",
        tags: list[Any] | None = None,
        dependencies: Sequence[Any] | None = None,
        default_response_class: Any = DEFAULT_JSON,
        responses: dict[Any, Any] | None = None,
        deprecated: bool | None = None,
        include_in_schema: bool = True,
        priority: int | Priority | None = None,
        **ignored: Any,
    ) -> None:
        """Copy ``router``'s routes (as they are now) under ``prefix``, with
        ``tags``, ``dependencies`` and ``priority`` added; its startup and
        shutdown handlers and lifespan join this router's."""
        if router is self:
            raise ValueError("cannot include a router into itself")
        if prefix:
            if not prefix.startswith("/"):
                raise ValueError("a path prefix must start with '/'")
            if prefix.endswith("/"):
                raise ValueError("a path prefix must not end with '/'")
        inc_priority = _to_priority(priority)
        for route in router.routes:
            kw = dict(route.kwargs)
            if kw.pop("raw", False):
                self.add_route(
                    prefix + route.path,
                    route.endpoint,
                    methods=kw.get("methods"),
                    name=route.name,
                    include_in_schema=route.include_in_schema and include_in_schema,
                )
                continue
            route_priority = kw.pop("priority", None)
            if route_priority is None:
                route_priority = router.priority if router.priority is not None else inc_priority
            response_class = _keep_default(
                _keep_default(
                    kw.pop("response_class", DEFAULT_JSON), router.default_response_class
                ),
                default_response_class,
            )
            kw.pop("dependencies", None)
            kw.pop("tags", None)
            strict = _keep_default(
                kw.pop("strict_content_type", DEFAULT_TRUE), router.strict_content_type
            )
            methods = kw.pop("methods", None)
            if responses:
                kw["responses"] = {**responses, **(kw.get("responses") or {})}
            if deprecated:
                kw["deprecated"] = True
            self.add_api_route(
                prefix + route.path,
                route.endpoint,
                methods=methods,
                response_class=response_class,
                dependencies=[*(dependencies or []), *route.dependencies],
                tags=[*(tags or []), *route.tags],
                priority=route_priority,
                strict_content_type=strict,
                status_code=route.status_code,
                response_model=route.response_model_arg,
                name=route.name,
                summary=route.summary,
                description=route.description,
                include_in_schema=route.include_in_schema and include_in_schema,
                **kw,
            )
        self.on_startup.extend(router.on_startup)
        self.on_shutdown.extend(router.on_shutdown)
        self.lifespans.extend(router.lifespans)

    # -- events ------------------------------------------------------------------------

    def add_event_handler(self, event_type: str, func: Callable[[], Any]) -> None:
        if event_type == "startup":
            self.on_startup.append(func)
        elif event_type == "shutdown":
            self.on_shutdown.append(func)
        else:
            raise ValueError(f"event_type must be 'startup' or 'shutdown', not {event_type!r}")

    def on_event(self, event_type: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
        """Deprecated, as in FastAPI: use ``lifespan``."""
        warnings.warn(ON_EVENT_DEPRECATED, DeprecationWarning, stacklevel=2)

        def decorator(func: DecoratedCallable) -> DecoratedCallable:
            self.add_event_handler(event_type, func)
            return func

        return decorator

    def url_path_for(self, name: str, /, **path_params: Any) -> str:
        for route in self.routes:
            if route.name == name and route.param_names == set(path_params):
                return route.url_path_for(**path_params)
        raise LookupError(f"no route named {name!r} with parameters {sorted(path_params)}")


def _keep_default(value: Any, fallback: Any) -> Any:
    """``value`` if the user chose it, else ``fallback`` (itself maybe a default)."""
    return fallback if isinstance(value, DefaultPlaceholder) else value
