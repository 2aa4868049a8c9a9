"""Shared fixtures: a real rawserve server on 127.0.0.1, in a thread of its own,
so that tests can drive it with blocking clients (curl, nghttp, httpx)."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rawserve.core.config import Config
from rawserve.serving.server import Server

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunningServer:
    server: Server
    loop: asyncio.AbstractEventLoop
    http_port: int
    https_port: int | None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    stop_event: Any = None

    def begin_shutdown(self) -> None:
        """Start the graceful shutdown without waiting for it."""
        self.loop.call_soon_threadsafe(self.stop_event.set)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop and return its result."""
        fut: Any = asyncio.run_coroutine_threadsafe(_call(fn, *args), self.loop)
        return fut.result(timeout=10)


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


@contextmanager
def run_server(app: Any, *, tls: bool = True, **options: Any) -> Iterator[RunningServer]:
    """Start ``app`` on ephemeral ports in a background thread."""
    cfg = Config(
        host="127.0.0.1", http_port=0, port=0 if tls else -1, quic_port=0, certs_dir=ROOT / "certs"
    )
    cfg = cfg.with_options(**options)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        server = Server(app, cfg)
        state["server"] = server
        try:
            async with server:
                state["stop"] = asyncio.Event()
                started.set()
                await state["stop"].wait()
        except BaseException as exc:
            state["error"] = exc
            started.set()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    started.wait(30)
    if "error" in state:
        raise state["error"]
    server = state["server"]
    try:
        yield RunningServer(server, loop, server.http_port, server.https_port, state["stop"])
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        loop.close()


def need(tool: str) -> str:
    """The path of an external client; tests fail (not skip) when it is missing,
    because tools/run_tests.py (the README's test command) installs them."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"{tool} is not installed: python3 tools/run_tests.py installs the Debian "
            "packages the tests drive (as root), or see its DEBIAN_TOOLS for the list"
        )
    return path
