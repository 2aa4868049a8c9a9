"""Work to run after the response has been sent (FastAPI's BackgroundTasks)."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any


def _is_async_callable(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


class BackgroundTask:
    """``func(*args, **kwargs)`` after the response; sync functions run in a
    worker thread so they never block the event loop."""

    __slots__ = ("args", "func", "is_async", "kwargs")

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.is_async = _is_async_callable(func)

    async def __call__(self) -> None:
        if self.is_async:
            await self.func(*self.args, **self.kwargs)
        else:
            await asyncio.to_thread(self.func, *self.args, **self.kwargs)


class BackgroundTasks(BackgroundTask):
    """Several tasks run one after another, in the order they were added."""

    __slots__ = ("tasks",)

    def __init__(self, tasks: Sequence[BackgroundTask] | None = None) -> None:
        self.tasks: list[BackgroundTask] = list(tasks) if tasks else []

    def add_task(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.tasks.append(BackgroundTask(func, *args, **kwargs))

    async def __call__(self) -> None:
        for task in self.tasks:
            await task()
