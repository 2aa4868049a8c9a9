"""``GET /results/{key}``: every inference answer is a resource, named by its
content address (the ``Content-Location`` of the answer, and ``"result"`` in a
/predict body), served from the result cache with an ETag and 304s.

A result still being computed is waited for (within the request's deadline)
rather than answered 404. A key that is not a well-formed hash is 404 without
a lookup: arbitrary client text never reaches a cache backend.
"""

from __future__ import annotations

import asyncio

from rawserve.inference.app.application import InferenceApp
from rawserve.inference.app.errors import detail_error
from rawserve.inference.app.submit import deadline_s
from rawserve.inference.cache import CachedResult, is_key
from rawserve.requests import Request
from rawserve.responses import Response
from rawserve.routing import APIRouter

router = APIRouter()


@router.get("/results/{key}")
async def get_result(request: Request, key: str) -> Response:
    app: InferenceApp = request.app
    cache = app.cache
    if cache is None:
        return detail_error("the result cache is off (--no-cache)", 404)
    if not is_key(key):
        return detail_error("not a result key: expected 64 lowercase hex digits", 404)
    value: CachedResult | None = None
    flight = cache.in_flight(key)
    if flight is not None:
        timeout = deadline_s(request, None) or app.settings.queue_timeout_ms / 1000 or None
        try:
            async with asyncio.timeout(timeout):
                value = await asyncio.shield(flight)
        except TimeoutError:
            return detail_error("the result is still being computed", 504)
        except asyncio.CancelledError:
            if flight.cancelled() and not _current_cancelled():
                value = None  # its requests all went away before it was computed
            else:
                raise
        except Exception:
            value = None  # the inference failed; nothing was stored
    if value is None:
        value = await cache.lookup(key)
    if value is None:
        return detail_error(f"no result {key}: never computed here, or expired", 404)
    headers = {
        "etag": value.etag,
        "cache-control": f"max-age={int(cache.ttl_left(key))}",
    }
    if _matches(request.headers.get("if-none-match"), value.etag):
        return Response(None, 304, headers)
    headers["content-type"] = value.content_type
    headers.update(value.headers)
    return Response(value.body, 200, headers)


def _current_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: weak comparison, ``*`` matches any current representation."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
