"""tools/soak.py, 10 seconds: mixed HTTP/1.1, h2c and HTTP/3 traffic with bad
requests, resets and slow readers, and the server's RSS, open fds and task
count stay within their bounds after warm-up and come back once the clients
are gone (issue 15, build 5). The tool itself runs longer on demand."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_a_ten_second_soak_grows_nothing_past_its_bounds() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "soak.py"), "--minutes", str(10 / 60)],
        capture_output=True,
        timeout=300,  # a hang fails here; a normal run takes about 15 s
        text=True,
        cwd=ROOT,
    )
    summary = json.loads(proc.stdout)
    assert summary["failures"] == [], summary["failures"]
    assert proc.returncode == 0
    done = summary["requests"]
    for kind in ("h1 predict", "h1 bad", "h1 reset", "h1 slow", "h2 predict", "h2 reset"):
        assert done.get(kind, 0) > 0, (kind, done)
    for kind in ("h3 predict", "h3 reset", "h3 bad"):
        assert done.get(kind, 0) > 0, (kind, done)
    # The task count was reported, and the idle server came back to it.
    assert summary["idle"]["tasks"] >= 0
    assert summary["settled"]["fds"] <= summary["idle"]["fds"] + 32
    assert len(summary["samples"]) >= 8
