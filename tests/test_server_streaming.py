"""Path operations that yield, over real sockets and every protocol the
server speaks: each line reaches the client before the next is produced."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from rawserve import RawServe
from tests.conftest import RunningServer, need, run_server
from tests.h3client import h3_connect

app = RawServe()
_released: dict[str, threading.Event] = {}


@app.get("/lines/{n}")
async def lines(n: int) -> AsyncIterator[dict[str, Any]]:
    for i in range(n):
        yield {"line": i}


@app.get("/gated/{key}")
def gated(key: str) -> Iterator[dict[str, Any]]:
    # A sync generator (run in a worker thread) that cannot go on until the
    # client has read the first line: proof that the line was sent alone.
    yield {"step": "first"}
    if not _released[key].wait(30):
        raise RuntimeError("the client never saw the first line")
    yield {"step": "second"}


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(app, quic_port=None) as s:  # HTTP/3 on the TLS port number
        yield s


def _read_gated(client: httpx.Client, url: str, key: str) -> list[Any]:
    _released[key] = threading.Event()
    seen = []
    with client.stream("GET", f"{url}/gated/{key}") as r:
        assert r.headers["content-type"] == "application/jsonl"
        for line in r.iter_lines():
            seen.append(json.loads(line))
            _released[key].set()
    return seen


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_json_lines_over_http11(srv: RunningServer, scheme: str) -> None:
    url = srv.http_url if scheme == "http" else srv.https_url
    with httpx.Client(verify=False) as client:
        r = client.get(f"{url}/lines/3")
        assert r.http_version == "HTTP/1.1"
        assert r.text == '{"line":0}\n{"line":1}\n{"line":2}\n'
        assert _read_gated(client, url, f"h1-{scheme}") == [{"step": "first"}, {"step": "second"}]


def test_json_lines_over_h2(srv: RunningServer) -> None:
    with httpx.Client(http2=True, verify=False) as client:
        r = client.get(f"{srv.https_url}/lines/3")
        assert r.http_version == "HTTP/2"
        assert r.text == '{"line":0}\n{"line":1}\n{"line":2}\n'
        seen = _read_gated(client, srv.https_url, "h2")
        assert seen == [{"step": "first"}, {"step": "second"}]


def test_json_lines_over_h2c(srv: RunningServer) -> None:
    out = subprocess.run(
        [need("curl"), "-sS", "--http2-prior-knowledge", f"{srv.http_url}/lines/2"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert out.stdout == b'{"line":0}\n{"line":1}\n'


def test_json_lines_over_http3(srv: RunningServer) -> None:
    async def main() -> Any:
        async with h3_connect(srv.server.quic_port or 0) as client:
            return await client.request("GET", "/lines/3")

    r = asyncio.run(main())
    assert r.status == 200
    assert r.header(b"content-type") == b"application/jsonl"
    assert r.body == b'{"line":0}\n{"line":1}\n{"line":2}\n'
