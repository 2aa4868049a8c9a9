"""The seed article's FastAPI example, ported by changing only its imports,
served over HTTP/1.1, h2c and h2 to curl; and the CLI serving it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps.seed_app import app
from tests.conftest import ROOT, RunningServer, need, run_server

MODES = {
    "http1.1": ["--http1.1"],
    "h2c": ["--http2-prior-knowledge"],
    "h2": ["--http2", "-k"],
}


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(app) as s:
        yield s


def _url(srv: RunningServer, mode: str, path: str) -> str:
    return (srv.https_url if mode == "h2" else srv.http_url) + path


@pytest.mark.parametrize("mode", list(MODES))
def test_predict_upload(srv: RunningServer, mode: str, tmp_path: Path) -> None:
    curl = need("curl")
    sample = tmp_path / "digit.bin"
    sample.write_bytes(bytes(range(64)))
    out = subprocess.run(
        [
            curl,
            "-sS",
            *MODES[mode],
            "-w",
            "\n%{http_version}",
            "-F",
            f"file=@{sample}",
            _url(srv, mode, "/predict"),
        ],
        capture_output=True,
        timeout=10,
        check=True,
        text=True,
    ).stdout
    body, version = out.rsplit("\n", 1)
    assert version == ("1.1" if mode == "http1.1" else "2")
    answer = json.loads(body)
    assert answer["filename"] == "digit.bin"
    assert answer["size"] == 64


@pytest.mark.parametrize("mode", list(MODES))
def test_stream_ten_chunks(srv: RunningServer, mode: str) -> None:
    curl = need("curl")
    out = subprocess.run(
        [curl, "-sS", "-N", *MODES[mode], _url(srv, mode, "/stream")],
        capture_output=True,
        timeout=10,
        check=True,
        text=True,
    ).stdout
    assert out.splitlines() == [f"chunk {i}" for i in range(10)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serves_the_seed_app_to_curl() -> None:
    curl = need("curl")
    http_port, tls_port = _free_port(), _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rawserve",
            "tests.apps.seed_app:app",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(http_port),
            "--port",
            str(tls_port),
            "--quic-port",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for args, url in (
            (["--http1.1"], f"http://127.0.0.1:{http_port}/stream"),
            (["--http2-prior-knowledge"], f"http://127.0.0.1:{http_port}/stream"),
            (["--http2", "-k"], f"https://127.0.0.1:{tls_port}/stream"),
        ):
            out = subprocess.run(
                [curl, "-sS", *args, url], capture_output=True, timeout=10, text=True
            )
            assert out.stdout.splitlines()[-1] == "chunk 9", (args, out.stderr)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
