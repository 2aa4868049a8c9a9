"""tools/edge_check.sh, offline: the script parses, passes shellcheck, and
refuses bad usage before touching anything. The check itself downloads a
Debian root file system and PyPI wheels and takes minutes under QEMU, so it
is run by hand (docs/EDGE.md), never here."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tools" / "edge_check.sh"


def test_the_script_parses() -> None:
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_shellcheck_finds_nothing() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        # tools/run_tests.py installs it where it can; CI must have it.
        message = "shellcheck not installed (Debian: apt-get install shellcheck)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("args", [["--bogus"], ["--cpu", "max"]])
def test_bad_usage_exits_2_without_side_effects(args: list[str]) -> None:
    # Usage is checked before the root check, the cache and any download.
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "EDGE_CACHE": "/nonexistent/edge-cache"},
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "edge_check" in proc.stderr
