"""Running sync handlers and dependencies in worker threads, so they never
block the event loop (starlette's and FastAPI's concurrency.py).

One pool for every blocking call rawserve makes: the running loop's default
executor, which ``asyncio.to_thread`` uses for file reads, background tasks,
model loading and request decoding too. The loop owns it and shuts it down
when it closes (``asyncio.run`` waits for it), where a private module-level
pool outlived every loop and was shared between them. It is sized to
``THREAD_POOL_SIZE`` threads the first time a handler needs it on a loop:
FastAPI (anyio) lets 40 sync handlers run at once, and asyncio's default
(cores + 4, at most 32) would let a few slow sync handlers queue the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["THREAD_POOL_SIZE", "ThreadedContextManager", "run_sync"]

# FastAPI (anyio) lets 40 sync handlers and dependencies run at once.
THREAD_POOL_SIZE = 40

# Loops whose default executor rawserve has sized; weak, so a closed loop
# leaves nothing behind.
_sized: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _thread_pool_ready() -> asyncio.AbstractEventLoop:
    loop = asyncio.get_running_loop()
    if loop not in _sized:
        _sized.add(loop)
        # Replaces the default executor if a to_thread call made one already;
        # its idle threads exit once it is collected.
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(
                max_workers=THREAD_POOL_SIZE, thread_name_prefix="rawserve-sync"
            )
        )
    return loop


async def run_sync(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``fn(**kwargs)`` in a worker thread, with the caller's contextvars."""
    loop = _thread_pool_ready()
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(None, functools.partial(ctx.run, fn, **kwargs))


class ThreadedContextManager:
    """A sync generator dependency: enter and exit run in a worker thread, so
    blocking setup and cleanup never block the loop. Both run in one copy of
    the caller's context, so the exit sees the contextvars its entry set (as
    the generator's code before and after ``yield`` expects)."""

    __slots__ = ("_cm", "_ctx")

    def __init__(self, cm: Any) -> None:
        self._cm = cm
        self._ctx: contextvars.Context | None = None

    async def __aenter__(self) -> Any:
        loop = _thread_pool_ready()
        self._ctx = contextvars.copy_context()
        return await loop.run_in_executor(None, self._ctx.run, self._cm.__enter__)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        loop = _thread_pool_ready()
        ctx = self._ctx if self._ctx is not None else contextvars.copy_context()
        return bool(await loop.run_in_executor(None, ctx.run, self._cm.__exit__, exc_type, exc, tb))
