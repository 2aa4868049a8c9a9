"""Real redis-server and memcached processes for the tests, on 127.0.0.1.

Each is started on a free port with no persistence and stopped (or killed, to
test an outage) by the test that owns it. tools/run_tests.py installs the
Debian packages; a missing binary fails the test with that instruction.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, name: str, argv_for_port: list[str], port: int) -> None:
        self.name = name
        self.argv = argv_for_port
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # A bounded wait for the port to accept: fails only if it never does.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: python3 tools/run_tests.py installs it as root "
            f"(Debian package {package})"
        )
    return path


def redis_service(tmp: Path) -> Service:
    port = free_port()
    argv = [
        _binary("redis-server", "redis-server"),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(tmp),
    ]  # fmt: skip
    return Service("redis-server", argv, port)


def memcached_service(max_item_bytes: int = 1024 * 1024) -> Service:
    port = free_port()
    argv = [
        _binary("memcached", "memcached"),
        "-l", "127.0.0.1",
        "-p", str(port),
        "-U", "0",
        "-m", "64",
        "-I", str(max_item_bytes),
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv += ["-u", "root"]  # memcached refuses to run as root without it
    return Service("memcached", argv, port)
