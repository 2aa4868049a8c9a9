"""tools/bench.py's progress bar: redrawn in place on a terminal, silent in a
log file (which gets the per-run lines only)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from typing import Any

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
