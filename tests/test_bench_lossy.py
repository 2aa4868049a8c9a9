"""tools/bench_lossy.py: a tiny run (rawserve only, 5 % loss, few requests)
builds its namespaces, veth pair and nftables drop rules, reports figures
for h2 and HTTP/3, and removes the namespaces; they are removed when the run
fails too, and a user who cannot run it is told why. Needs root, ip, nft
(Debian nftables), h2load and curl, as the tool does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "bench_lossy.py"


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def lossy(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), "--smoke", "--servers", "rawserve", "--no-pin", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tools_present() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/test_bench_lossy.py runs as root (network namespaces, nftables)")
    for tool in ("ip", "nft", "h2load", "curl"):
        need(tool)


def test_a_tiny_lossy_run_reports_both_protocols_and_removes_its_namespaces(
    tmp_path: Path, tools_present: None
) -> None:
    name = f"rslt{os.getpid()}"
    report_path = tmp_path / "report.json"
    done = lossy(
        "--loss", "5", "--requests", "100", "--rounds", "1", "--request-timeout", "5",
        "--name", name, "--json", str(report_path), "--doc", str(tmp_path / "doc.md"),
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    rows = {(r["server"], r["protocol"], r["loss"]): r for r in report["rows"]}
    assert set(rows) == {("rawserve", "h2", 5), ("rawserve", "h3", 5)}
    for row in rows.values():
        assert row["runs"] == 1
        # Every request is accounted for: answered, or counted as an error.
        assert row["answered"] + row["errors"] == 100, row
        assert row["answered"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    # The drop rules were live: 5 % of some hundreds of packets each way.
    assert sum(r["dropped"] for r in rows.values()) > 0
    # The exit status says whether every request was answered.
    assert done.returncode == (1 if any(r["errors"] for r in rows.values()) else 0), done.stderr
    text = (tmp_path / "doc.md").read_text()
    assert "tools/bench_lossy.py: begin" in text and "| rawserve | HTTP/3 | 5 % |" in text
    assert "namespaces removed" in done.stderr
    assert name not in namespaces()


def test_a_failed_run_still_removes_its_namespaces(tmp_path: Path, tools_present: None) -> None:
    name = f"rslf{os.getpid()}"
    # rawserve refuses an unknown flag and exits: the run fails after the
    # namespaces and rules exist.
    done = lossy("--loss", "1", "--requests", "10", "--name", name,
                 "--rawserve-arg=--no-such-flag", timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert "bench_lossy failed: rawserve exited" in done.stderr
    assert "namespaces removed" in done.stderr
    assert name not in namespaces()


def test_without_root_it_says_why_and_exits_2(tools_present: None) -> None:
    # As nobody, from a copy nobody can read: the checkout (or pytest's
    # tmp_path) may sit in a directory only root may enter. The tool's
    # preflight needs nothing but the standard library and tools/bench.py.
    with tempfile.TemporaryDirectory() as where:
        os.chmod(where, 0o755)
        for name in (TOOL.name, "bench.py"):
            os.chmod(shutil.copy(TOOL.parent / name, where), 0o644)
        tool = str(Path(where) / TOOL.name)
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, tool, "--smoke"],
            cwd=where, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert "cannot run: must run as root" in done.stderr
