"""tools/cpu_per_request.py end to end: two builds (HEAD from git and the work
tree) served for real on 127.0.0.1 and loaded by h2load, and the ways it must
fail (a revision git does not know, a missing h2load or taskset, Ctrl-C)
with a message, a non-zero status, no server left running and no temporary
tree left behind. Counts and structure only: the CPU figures are the
machine's, not the test's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "cpu_per_request.py"
# The suite's venv has no uvloop (the bench venv does), hence --loop asyncio.
VENV = ["--venv", sys.prefix, "--loop", "asyncio"]


def command(*args: str) -> list[str]:
    return [sys.executable, str(TOOL), *args, *VENV]


def env_with_tmp(tmp: Path, path: str | None = None) -> dict[str, str]:
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp))
    if path is not None:
        env["PATH"] = path
    return env


def gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, waiting for init to reap it
            return True
        time.sleep(0.05)
    return False


def test_two_builds_are_measured_side_by_side_over_h1_and_h2c(tmp_path: Path) -> None:
    need("h2load")
    need("taskset")
    report_path, tmp = tmp_path / "report.json", tmp_path / "tmp"
    done = subprocess.run(
        command(
            "base=HEAD",
            "new=worktree",
            "--quick",
            "--columns",
            "h1,h2c",
            "--json",
            str(report_path),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        env=env_with_tmp(tmp),
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(report_path.read_text())
    rounds, requests = report["rounds"], report["requests"]
    assert rounds >= 2 and requests > 0
    assert [b["name"] for b in report["builds"]] == ["base", "new"]
    assert report["builds"][0]["source"] == "HEAD" and report["builds"][1]["source"] == "worktree"

    runs = report["runs"]
    assert len(runs) == rounds * 2 * 2  # rounds x columns x builds
    for run in runs:
        assert run["answered"] == run["requests"] == requests
        assert run["protocol"] == {"h1": "http/1.1", "h2c": "h2c"}[run["column"]]
    # Every build runs every column in every round, in an order rotated each round.
    for round_ in range(1, rounds + 1):
        for column in ("h1", "h2c"):
            order = [
                r["build"]
                for r in sorted(runs, key=lambda r: r["position"])
                if r["round"] == round_ and r["column"] == column
            ]
            assert order == (["base", "new"] if round_ % 2 else ["new", "base"])

    assert set(report["summary"]) == {"h1", "h2c"}
    for column, cells in report["summary"].items():
        assert set(cells) == {"base", "new"}, column
        for cell in cells.values():
            assert cell["rounds"] == rounds
            assert cell["requests_answered"] == rounds * requests
            assert len(cell["ratios"]) == rounds
            assert cell["ratio_min"] <= cell["ratio"] <= cell["ratio_max"]
        assert cells["base"]["ratios"] == [1.0] * rounds

    table = done.stdout
    assert "| column | build | CPU per request | / base | req/s |" in table
    assert table.count("| base |") == 2 and table.count("| new |") == 2
    assert "- base: HEAD (" in table and "- new: worktree (" in table

    for build in report["builds"]:
        assert gone(build["pid"]), f"server {build['name']} still running"
    assert list(tmp.iterdir()) == []


def test_a_revision_git_does_not_know_is_named(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    done = subprocess.run(
        command("base=no-such-revision-x", "new=worktree", "--quick"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env_with_tmp(tmp),
    )
    assert done.returncode != 0
    assert "base=no-such-revision-x: not a git revision" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("missing", "package"), [("h2load", "nghttp2-client"), ("taskset", "util-linux")]
)
def test_a_missing_tool_is_named(tmp_path: Path, missing: str, package: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "h2load", "taskset"):
        if tool != missing:
            (bin_dir / tool).symlink_to(need(tool))
    tmp = tmp_path / "tmp"
    done = subprocess.run(
        command("base=HEAD", "new=worktree", "--quick"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env_with_tmp(tmp, path=str(bin_dir)),
    )
    assert done.returncode != 0
    assert f"{missing} not found on PATH (Debian package: {package})" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp.iterdir()) == []


def test_ctrl_c_stops_the_servers_and_removes_the_trees(tmp_path: Path) -> None:
    need("h2load")
    need("taskset")
    tmp = tmp_path / "tmp"
    # Enough requests that the interrupt lands while h2load is running.
    process = subprocess.Popen(
        command("a=HEAD", "b=worktree", "--quick", "--columns", "h1", "--requests", "50000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with_tmp(tmp),
        # A shell's background job may have SIGINT ignored; Ctrl-C is the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    watchdog = threading.Timer(90, process.kill)  # fail on a hang, not wait forever
    watchdog.start()
    try:
        assert process.stderr is not None
        pids, lines = [], []
        for line in process.stderr:
            lines.append(line)
            if line.startswith("started "):
                pids.append(int(line.rsplit("pid", 1)[1]))
            if line.startswith("warmed up b"):
                break
        assert len(pids) == 2, "".join(lines)
        time.sleep(0.5)  # into round 1's h2load run
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait() == 130, rest
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
    assert "interrupted; servers stopped" in rest
    for pid in pids:
        assert gone(pid), f"server {pid} still running"
    assert list(tmp.iterdir()) == []
