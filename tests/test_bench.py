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


# The quick run in two invocations at once, each writing its own report and
# document: on two cores they take about the time of the longer one instead of
# the sum. Every scenario still runs once. The second holds the three blocks
# of the document (main, h3, workers), so one file still gets every block, each
# once; the first holds B and priority, which share model B's in-process curve.
QUICK_GROUPS = (("A", "B", "C", "priority", "footprint", "cache"), ("push", "h3", "workers"))


def quick_runs(tmp_path: Path) -> list[tuple[dict[str, Any], str]]:
    """Every group of QUICK_GROUPS run at once: (report, document) for each."""
    runs = []
    for n, group in enumerate(QUICK_GROUPS):
        report_path, doc = tmp_path / f"report-{n}.json", tmp_path / f"BENCHMARKS-{n}.md"
        cmd = [
            sys.executable,
            str(ROOT / "tools" / "bench.py"),
            "--quick",
            "--servers",
            "rawserve",
            "--scenarios",
            ",".join(group),
            "--no-pin",
            "--json",
            str(report_path),
            "--doc",
            str(doc),
        ]
        out = (tmp_path / f"bench-{n}.log").open("w")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        runs.append((proc, out, report_path, doc))
    results = []
    try:
        for proc, out, report_path, doc in runs:
            proc.wait(timeout=240)  # a hang fails here
            out.close()
            log = Path(out.name).read_text()
            assert proc.returncode == 0, log[-3000:]
            results.append((json.loads(report_path.read_text()), doc.read_text()))
    finally:
        for proc, out, _, _ in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    return results


def test_a_quick_run_of_rawserve_alone_reports_every_scenario(tmp_path: Path) -> None:
    """``tools/bench.py --quick`` end to end, without the peers (CI does not
    install them) and without timing asserts: every scenario runs, every
    request is answered 2xx, and the report has its shape."""
    need("h2load")
    need("curl")
    runs = quick_runs(tmp_path)
    bench = load_bench()
    # Each invocation ran exactly the scenarios it was given; together, all.
    for (report, _), group in zip(runs, QUICK_GROUPS, strict=True):
        assert set(report["scenarios"]) == set(group)
        assert report["server_log_errors"] == []
    scenarios = {name: s for report, _ in runs for name, s in report["scenarios"].items()}
    assert set(scenarios) == set(bench.SCENARIOS)
    assert sorted(name for group in QUICK_GROUPS for name in group) == sorted(bench.SCENARIOS)

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

    # Each document: its own blocks once each, every scenario's heading, and
    # no failed request. The second has all three blocks in one file.
    headings = {
        "A": "### A:",
        "B": "### B:",
        "C": "### C:",
        "priority": "### Priority",
        "footprint": "### Footprint",
        "cache": "### Result cache",
        "push": "### Push",
        "h3": "### HTTP/3",
        "workers": "### Workers",
    }
    assert set(headings) == set(bench.SCENARIOS)
    for (_, text), group in zip(runs, QUICK_GROUPS, strict=True):
        assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
        for block in ("h3", "workers"):
            begin, end = bench.markers(block)
            assert text.count(begin) == text.count(end) == (block in group)
        for name in group:
            assert headings[name] in text
        assert "QUICK SMOKE RUN" in text
        assert "No request failed or was answered non-2xx." in text
    assert {"h3", "workers"} <= set(QUICK_GROUPS[-1])
