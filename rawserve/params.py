"""The markers a handler's parameters carry: ``Query``, ``Path``, ``Header``,
``Cookie``, ``Body``, ``Form``, ``File``, ``Depends``, ``Security`` (FastAPI's params.py).

Reading them off a signature is ``rawserve.dependencies``; checking values
against them is ``rawserve.validation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

__all__ = [
    "Body",
    "BodyParam",
    "Cookie",
    "CookieParam",
    "Depends",
    "DependsParam",
    "File",
    "FileParam",
    "Form",
    "FormParam",
    "Header",
    "HeaderParam",
    "Param",
    "Path",
    "PathParam",
    "Query",
    "QueryParam",
    "Security",
]


class _UndefinedType:
    """No default was given: the parameter is required."""

    _instance: _UndefinedType | None = None

    def __new__(cls) -> _UndefinedType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Undefined"

    def __bool__(self) -> bool:
        return False


Undefined: Any = _UndefinedType()


class Param:
    """Where a parameter comes from and how it is constrained. Keyword
    arguments FastAPI accepts for documentation only are accepted and kept."""

    in_: str = "query"

    def __init__(
        self,
        default: Any = Undefined,
        *,
        default_factory: Callable[[], Any] | None = None,
        alias: str | None = None,
        validation_alias: str | None = None,
        title: str | None = None,
        description: str | None = None,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
        multiple_of: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        regex: str | None = None,
        include_in_schema: bool = True,
        **extra: Any,
    ) -> None:
        if default is ...:
            default = Undefined
        if default is not Undefined and default_factory is not None:
            raise TypeError("cannot give both default and default_factory")
        self.default = default
        self.default_factory = default_factory
        self.alias = validation_alias or alias
        self.title = title
        self.description = description
        self.gt = gt
        self.ge = ge
        self.lt = lt
        self.le = le
        self.multiple_of = multiple_of
        self.min_length = min_length
        self.max_length = max_length
        self.pattern = pattern if pattern is not None else regex
        self.include_in_schema = include_in_schema
        self.extra = extra

    @property
    def required(self) -> bool:
        return self.default is Undefined and self.default_factory is None

    def with_default(self, default: Any) -> Param:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.default = Undefined if default is ... else default
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.default!r})"


class PathParam(Param):
    in_ = "path"


class QueryParam(Param):
    in_ = "query"


class HeaderParam(Param):
    in_ = "header"

    def __init__(
        self, default: Any = Undefined, *, convert_underscores: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(default, **kwargs)
        self.convert_underscores = convert_underscores


class CookieParam(Param):
    in_ = "cookie"


class BodyParam(Param):
    in_ = "body"

    def __init__(
        self,
        default: Any = Undefined,
        *,
        embed: bool | None = None,
        media_type: str = "application/json",
        **kwargs: Any,
    ) -> None:
        super().__init__(default, **kwargs)
        self.embed = embed
        self.media_type = media_type


class FormParam(BodyParam):
    def __init__(
        self,
        default: Any = Undefined,
        *,
        media_type: str = "application/x-www-form-urlencoded",
        **kwargs: Any,
    ) -> None:
        super().__init__(default, media_type=media_type, **kwargs)


class FileParam(FormParam):
    def __init__(
        self, default: Any = Undefined, *, media_type: str = "multipart/form-data", **kwargs: Any
    ) -> None:
        super().__init__(default, media_type=media_type, **kwargs)


class DependsParam:
    """``Depends(f)``: the argument is what ``f`` returns, with ``f``'s own
    parameters bound the same way. Cached per request unless ``use_cache=False``;
    ``scope="function"`` ends a yield-dependency right after the handler
    returns instead of after the response is sent."""

    __slots__ = ("dependency", "scope", "scopes", "use_cache")

    def __init__(
        self,
        dependency: Callable[..., Any] | None = None,
        *,
        use_cache: bool = True,
        scope: Literal["function", "request"] | None = None,
        scopes: Sequence[str] | None = None,
    ) -> None:
        self.dependency = dependency
        self.use_cache = use_cache
        self.scope = scope
        self.scopes = list(scopes or [])

    def __repr__(self) -> str:
        name = getattr(self.dependency, "__name__", repr(self.dependency))
        return f"Depends({name})"


# The functions users call. They return Any so that ``q: int = Query(1)``
# type-checks, as FastAPI's do.


def Path(default: Any = ..., **kwargs: Any) -> Any:
    return PathParam(default, **kwargs)


def Query(default: Any = Undefined, **kwargs: Any) -> Any:
    return QueryParam(default, **kwargs)


def Header(default: Any = Undefined, **kwargs: Any) -> Any:
    return HeaderParam(default, **kwargs)


def Cookie(default: Any = Undefined, **kwargs: Any) -> Any:
    return CookieParam(default, **kwargs)


def Body(default: Any = Undefined, **kwargs: Any) -> Any:
    return BodyParam(default, **kwargs)


def Form(default: Any = Undefined, **kwargs: Any) -> Any:
    return FormParam(default, **kwargs)


def File(default: Any = Undefined, **kwargs: Any) -> Any:
    return FileParam(default, **kwargs)


def Depends(
    dependency: Callable[..., Any] | None = None,
    *,
    use_cache: bool = True,
    scope: Literal["function", "request"] | None = None,
) -> Any:
    return DependsParam(dependency, use_cache=use_cache, scope=scope)


def Security(
    dependency: Callable[..., Any] | None = None,
    *,
    scopes: Sequence[str] | None = None,
    use_cache: bool = True,
) -> Any:
    return DependsParam(dependency, use_cache=use_cache, scopes=scopes)
