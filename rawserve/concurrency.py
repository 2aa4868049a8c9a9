"""Running sync handlers and dependencies in a thread pool, so they never block
the event loop (starlette's and FastAPI's concurrency.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import Callable
from typing import Any

__all__ = ["THREAD_POOL_SIZE", "ThreadedContextManager", "run_sync"]

_thread_pool: concurrent.futures.ThreadPoolExecutor | None = None
# FastAPI (anyio) lets 40 sync handlers and dependencies run at once.
THREAD_POOL_SIZE = 40


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _thread_pool
    if _thread_pool is None:
        _thread_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=THREAD_POOL_SIZE, thread_name_prefix="rawserve-sync"
        )
    return _thread_pool


async def run_sync(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``fn(**kwargs)`` in a worker thread, with the caller's contextvars."""
    ctx = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), functools.partial(ctx.run, fn, **kwargs))


class ThreadedContextManager:
    """A sync generator dependency: enter and exit run in a worker thread, so
    blocking setup and cleanup never block the loop."""

    __slots__ = ("_cm",)

    def __init__(self, cm: Any) -> None:
        self._cm = cm

    async def __aenter__(self) -> Any:
        return await run_sync(self._cm.__enter__, {})

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return bool(
            await asyncio.get_running_loop().run_in_executor(
                _pool(), self._cm.__exit__, exc_type, exc, tb
            )
        )
