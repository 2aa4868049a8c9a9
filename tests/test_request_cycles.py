"""A finished request leaves nothing for the cyclic garbage collector.

Each request's driver, its task, the task's coroutine and its body stream
refer to one another while the request runs. If they still did once it is
answered, every request would leave a dozen objects that only the cyclic
collector can free: its young collections then ran every hundred or so
requests and found all of them, costing about 10 us per h2c request. With
the collector off, such objects stay; so count the drivers alive after many
requests over real sockets (h2load, over h2c and HTTP/1.1).
"""

from __future__ import annotations

import gc
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawserve.serving.stream import StreamDriver
from tests.apps.echo_app import app
from tests.conftest import need, run_server

REQUESTS = 300


def _drivers_alive() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is StreamDriver)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


@pytest.mark.parametrize("protocol", ["h2c", "http/1.1"])
def test_answered_requests_are_freed_without_the_cyclic_collector(
    protocol: str, collector_off: None, tmp_path: Path
) -> None:
    h2load = need("h2load")
    body = tmp_path / "body"
    body.write_bytes(b"x" * 300)
    with run_server(app, tls=False) as srv:
        before = _drivers_alive()
        args = ["-c", "1", "-m", "8"] if protocol == "h2c" else ["-c", "4", "--h1"]
        out = subprocess.run(
            [h2load, "-n", str(REQUESTS), *args, "-d", str(body), f"{srv.http_url}/echo"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout.decode()
        assert f"{REQUESTS} succeeded" in out, out
        # The last drivers finish just after their answers went out.
        deadline = time.monotonic() + 5
        while (left := _drivers_alive() - before) > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left <= 0, f"{left} of {REQUESTS} drivers still alive with the collector off"
