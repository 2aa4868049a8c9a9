"""tools/priority_probe.py against a real server (the bundled digits model),
with real h2load as the u=7 load: it reports every part of the split for the
unloaded and loaded probes and the load's answers. No timing is asserted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawserve.inference.model import bundled_metadata
from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "priority_probe.py"


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    port = free_port()
    cmd = [sys.executable, "-m", "rawserve", "--http-port", str(port), "--port", "-1"]
    cmd += ["--quic-port", "0", "--no-cache", "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_probe_splits_unloaded_and_loaded_latency(server: int, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"inputs": bundled_metadata()["samples"]["inputs"][0]}))
    cmd = [sys.executable, str(TOOL), "--port", str(server), "--body", str(body)]
    done = subprocess.run(
        # Half a second loaded (a quarter unloaded) is some tens of probes of
        # each kind; the load itself runs two seconds (h2load -D, whole seconds).
        [*cmd, "--seconds", "0.5", "--connections", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name in ("unloaded", "loaded"):
        line = next(x for x in lines if x.startswith(f"{name}:"))
        assert int(re.search(r"(\d+) probes", line).group(1)) > 0  # type: ignore[union-attr]
        for part in ("total", "queue", "infer", "rest"):
            assert re.search(rf"{part} [\d.]+ / [\d.]+ / -?[\d.]+", line), line
    load = next(x for x in lines if x.startswith("u=7 load:"))
    assert re.search(r"\d+ 2xx, 0 other", load), load


def test_without_h2load_it_says_so(server: int, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("{}")
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing to run there
    done = subprocess.run(
        [sys.executable, str(TOOL), "--port", str(server), "--body", str(body)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1
    assert "h2load not found" in done.stderr
