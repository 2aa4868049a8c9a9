"""tools/bench.py: its progress bar (redrawn in place on a terminal, silent in
a log file, which gets the per-run lines only), and a quick run of rawserve
alone whose report must have every scenario's shape."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "tools" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up by name.
    sys.modules.setdefault("bench", module)
    spec.loader.exec_module(module)
    return module


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_moves_one_run_at_a_time_on_a_terminal() -> None:
    bench = load_bench()
    out = Terminal()
    progress = bench.Progress("A-json", 4, out)
    progress.start("warm-up rawserve h2")
    assert out.getvalue().endswith("[" + "." * 30 + "] 0/4 A-json: warm-up rawserve h2")
    progress.step()
    progress.start("round 1 rawserve h2")
    progress.step("   A-json round 1 rawserve h2  1,000 req/s")
    assert "   A-json round 1 rawserve h2  1,000 req/s\n" in out.getvalue()
    assert out.getvalue().endswith("[" + "#" * 15 + "." * 15 + "] 2/4 A-json: round 1 rawserve h2")
    progress.step()
    progress.step()
    assert "[" + "#" * 30 + "] 4/4" in out.getvalue()
    progress.close()
    assert out.getvalue().endswith("\r\033[K")


def test_a_log_file_gets_the_lines_without_the_bar() -> None:
    bench = load_bench()
    out = io.StringIO()
    progress = bench.Progress("A-json", 2, out)
    progress.start("warm-up")
    progress.step()
    progress.step("a result line")
    progress.close()
    assert out.getvalue() == "a result line\n"


def test_a_quick_run_of_rawserve_alone_reports_every_scenario(tmp_path: Path) -> None:
    """``tools/bench.py --quick`` end to end, without the peers (CI does not
    install them) and without timing asserts: every scenario runs, every
    request is answered 2xx, and the report has its shape."""
    need("h2load")
    need("curl")
    report_path, doc = tmp_path / "report.json", tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "bench.py"),
            "--quick",
            "--servers",
            "rawserve",
            "--no-pin",
            "--json",
            str(report_path),
            "--doc",
            str(doc),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    bench = load_bench()
    scenarios = report["scenarios"]
    assert set(scenarios) == set(bench.SCENARIOS)

    a = scenarios["A"]["cells"]
    assert sorted(c["column"] for c in a) == sorted(bench.TCP_COLUMNS)
    h3 = scenarios["h3"]["cells"]
    assert sorted(c["column"] for c in h3) == sorted(bench.H3_STREAMS)
    for scenario in ("A", "B", "C", "h3"):
        for cell in scenarios[scenario]["cells"]:
            assert cell["flavor"] == "rawserve"
            assert cell["errors"] == 0
            assert cell["rps"] > 0 and cell["p99_ms"] >= cell["p50_ms"] > 0
            assert cell["cpu_us"] > 0
    for scenario in ("B", "C"):
        result = scenarios[scenario]
        assert sorted(int(k) for k in result["in_process"]) == [1, 2, 4, 8, 16, 32, 64]
        for cell in result["cells"]:
            assert cell["mean_batch"] >= 1
            assert 0 < cell["fraction_of_in_process"]

    (priority,) = scenarios["priority"]["rows"]
    assert priority["loaded_probes"] > 0 and priority["unloaded_probes"] > 0
    assert priority["load_answered"] > 0
    assert priority["load_non_2xx"] == 0 and priority["load_failed"] == 0
    assert scenarios["priority"]["batch64_ms"] > 0

    (footprint,) = scenarios["footprint"]["rows"]
    assert 0 < footprint["ready_s"] and footprint["errors"] == 0
    assert 0 < footprint["rss_warm"] and 0 < footprint["rss_full"]

    cache = {c["flavor"]: c for c in scenarios["cache"]["cells"]}
    assert {"rawserve", "rawserve-nocache"} <= set(cache)
    assert cache["rawserve"]["hit_rate"] > 0.5  # one body repeated: all but the first
    assert cache["rawserve-nocache"]["answered_without_model"] == 0

    push = scenarios["push"]
    assert push["errors"] == 0
    assert {r["method"] for r in push["rows"]} == {"push", "separate"}

    # --workers 1 serves; --workers 2 either serves or is refused (before
    # issue 17 lands it), and says so.
    workers = scenarios["workers"]
    w1 = [c for c in workers["cells"] if c["flavor"] == "rawserve-w1"]
    assert sorted(c["column"] for c in w1) == ["h1", "h2c"]
    w2 = [c for c in workers["cells"] if c["flavor"] == "rawserve-w2"]
    assert (sorted(c["column"] for c in w2) == ["h1", "h2c"]) != (
        "rawserve-w2" in workers["refused"]
    )
    for cell in workers["cells"]:
        assert cell["errors"] == 0 and cell["rps"] > 0

    text = doc.read_text()
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    for block in ("h3", "workers"):
        begin, end = bench.markers(block)
        assert text.count(begin) == 1 and text.count(end) == 1
    for heading in (
        "### A:",
        "### B:",
        "### C:",
        "### Priority",
        "### Footprint",
        "### Result cache",
        "### Push",
        "### HTTP/3",
        "### Workers",
        "QUICK SMOKE RUN",
    ):
        assert heading in text
    assert "No request failed or was answered non-2xx." in text
    assert report["server_log_errors"] == []
