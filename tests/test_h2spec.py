"""HTTP/2 conformance: h2spec against ``python -m rawserve``, over TLS and h2c.

tools/run_h2spec.py does the work; this test fails (never skips) when h2spec
cannot be found, because CI always provides ../shared/tools/h2spec.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tools" / "run_h2spec.py"


def test_h2spec_has_no_unexpected_failures() -> None:
    result = subprocess.run(
        [sys.executable, str(RUNNER), "--timeout", "2"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode == 2:
        raise AssertionError(f"h2spec could not be run:\n{output}")
    assert result.returncode == 0, f"h2spec found unexpected failures:\n{output}"
    summaries = [line for line in result.stdout.splitlines() if line.startswith("h2spec ")]
    assert [line.split(":")[0] for line in summaries] == ["h2spec tls", "h2spec h2c"], output
