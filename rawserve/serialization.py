"""What a handler's return value becomes on the wire, FastAPI's way: a
declared response model validates and serializes it through pydantic, and an
iterator (sync or async) of items is streamed as JSON Lines, one encoded item
per line. ``routing.APIRoute`` decides which applies when the route is made."""

from __future__ import annotations

import collections.abc
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, get_args, get_origin

from rawserve.exceptions import ResponseValidationError
from rawserve.validation.errors import prefix_errors
from rawserve.validation.pydantic_bridge import is_pydantic_model, pydantic_errors, pydantic_module


def prepare_response_content(
    res: Any, *, exclude_unset: bool, exclude_defaults: bool, exclude_none: bool
) -> Any:
    """FastAPI dumps models before validating them against the response model,
    so that a subclass's extra fields are dropped and ``exclude_unset`` holds."""
    if is_pydantic_model(type(res)):
        return res.model_dump(
            by_alias=True,
            exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults,
            exclude_none=exclude_none,
        )
    if isinstance(res, list):
        return [
            prepare_response_content(
                x,
                exclude_unset=exclude_unset,
                exclude_defaults=exclude_defaults,
                exclude_none=exclude_none,
            )
            for x in res
        ]
    if isinstance(res, dict):
        return {
            k: prepare_response_content(
                v,
                exclude_unset=exclude_unset,
                exclude_defaults=exclude_defaults,
                exclude_none=exclude_none,
            )
            for k, v in res.items()
        }
    if dataclasses.is_dataclass(res) and not isinstance(res, type):
        return dataclasses.asdict(res)
    return res


class ResponseModel:
    """Validates and serializes a handler's return value through pydantic."""

    __slots__ = ("adapter", "dump_args", "exact_type", "flags", "validation_error")

    def __init__(self, model: Any, route_kwargs: dict[str, Any]) -> None:
        pyd = pydantic_module()
        self.adapter = pyd.TypeAdapter(model)
        self.validation_error = pyd.ValidationError
        self.flags = {
            "exclude_unset": route_kwargs.get("response_model_exclude_unset", False),
            "exclude_defaults": route_kwargs.get("response_model_exclude_defaults", False),
            "exclude_none": route_kwargs.get("response_model_exclude_none", False),
        }
        self.dump_args = dict(
            self.flags,
            include=route_kwargs.get("response_model_include"),
            exclude=route_kwargs.get("response_model_exclude"),
            by_alias=route_kwargs.get("response_model_by_alias", True),
        )
        # A value of exactly the model's class is already valid: skip the
        # dump-and-revalidate round trip in the common case.
        self.exact_type = model if is_pydantic_model(model) else None

    def validate(self, content: Any) -> Any:
        if self.exact_type is not None and type(content) is self.exact_type:
            return content
        prepared = prepare_response_content(content, **self.flags)
        try:
            return self.adapter.validate_python(prepared, from_attributes=True)
        except self.validation_error as exc:
            errors = prefix_errors(pydantic_errors(exc), ("response",))
            raise ResponseValidationError(errors, body=content) from None

    def json(self, content: Any) -> bytes:
        return bytes(self.adapter.dump_json(self.validate(content), **self.dump_args))

    def python(self, content: Any) -> Any:
        return self.adapter.dump_python(self.validate(content), mode="json", **self.dump_args)


_STREAM_ORIGINS = frozenset(
    {
        collections.abc.AsyncIterable,
        collections.abc.AsyncIterator,
        collections.abc.AsyncGenerator,
        collections.abc.Iterable,
        collections.abc.Iterator,
        collections.abc.Generator,
    }
)


def stream_item_type(annotation: Any) -> Any:
    """``Item`` from ``AsyncIterable[Item]`` (or any iterator/generator
    spelling); None when the annotation does not say."""
    if get_origin(annotation) in _STREAM_ORIGINS:
        args = get_args(annotation)
        return args[0] if args else None
    return None


def json_lines(items: Any, encode: Callable[[Any], bytes]) -> Iterator[bytes]:
    try:
        for item in items:
            yield encode(item) + b"\n"
    finally:
        items.close()


async def json_lines_async(items: Any, encode: Callable[[Any], bytes]) -> AsyncIterator[bytes]:
    try:
        async for item in items:
            yield encode(item) + b"\n"
    finally:
        await items.aclose()
