"""HTTP/2 conformance: h2spec against ``python -m rawserve``, over TLS and h2c.

tools/run_h2spec.py does the work. Where h2spec is not installed (a fresh
clone on a user's machine) the test is skipped and says how to get it; under
CI (``CI=true``) it must run, because CI always provides h2spec.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tools" / "run_h2spec.py"
HOW_TO_GET = (
    "get h2spec (summerwind/h2spec) from its release binaries, or build it with "
    "`go install github.com/summerwind/h2spec/cmd/h2spec@latest`, then put it on PATH "
    "or set $H2SPEC"
)


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
        if os.environ.get("CI") == "true" or "not found" not in output:
            raise AssertionError(f"h2spec could not be run:\n{output}")
        pytest.skip(f"h2spec conformance not run: {output.splitlines()[-1]}; {HOW_TO_GET}")
    assert result.returncode == 0, f"h2spec found unexpected failures:\n{output}"
    summaries = [line for line in result.stdout.splitlines() if line.startswith("h2spec ")]
    assert [line.split(":")[0] for line in summaries] == ["h2spec tls", "h2spec h2c"], output
