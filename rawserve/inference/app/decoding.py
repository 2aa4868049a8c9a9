"""Request bodies decoded off the event loop when they are large.

Turning a few megabytes of JSON into tensors takes the loop away from every
other client for as long as it runs. Bodies from ``OFF_LOOP_BYTES`` up are
decoded in a worker thread (``asyncio.to_thread``, like every other blocking
call in rawserve), and at most ``DecodeSlots.limit`` of them at once per app:
the bound on the memory that concurrent decodes hold and on the threads they
take from the default pool. Smaller bodies decode inline, where a thread hop
would cost more than the decode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

__all__ = ["OFF_LOOP_BYTES", "DecodeSlots"]

T = TypeVar("T")

OFF_LOOP_BYTES = 256 * 1024


class DecodeSlots:
    """Runs decodes of large bodies in worker threads, ``limit`` at a time;
    the rest wait their turn (the body limit bounds each one)."""

    def __init__(self, limit: int = 2, off_loop_bytes: int = OFF_LOOP_BYTES) -> None:
        self.limit = limit
        self.off_loop_bytes = off_loop_bytes
        self._slots = asyncio.Semaphore(limit)
        self.off_loop = 0  # decodes run in a thread, for tests and metrics

    async def run(self, size: int, fn: Callable[[], T]) -> T:
        """``fn()``, inline for a body of fewer than ``off_loop_bytes`` bytes,
        else in a worker thread once a slot is free."""
        if size < self.off_loop_bytes:
            return fn()
        async with self._slots:
            self.off_loop += 1
            return await asyncio.to_thread(fn)
