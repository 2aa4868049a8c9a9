#!/usr/bin/env python3
"""Install what the test suite needs, then run the checks and the tests.

    python3 tools/run_tests.py [--no-checks] [pytest arguments...]

What it does, in order, each step saying what it does:
1. Debian packages for the real clients the tests drive (curl, nghttp, h2load,
   ...). Installed with apt-get when they are missing and we are root on a
   Debian-like system; otherwise it names what is missing and how to get it,
   and the tests that need a missing client fail saying so.
2. A virtualenv in .venv (made with this Python when absent) with rawserve and
   its test extra installed in editable mode; and build/venv-kserve with the
   kserve SDK (the ``kserve-sdk`` extra), which tests/test_deploy.py loads
   deploy/kserve/ into: kept apart because it brings FastAPI, uvicorn and
   uvloop, which must not change what the suite's rawserve runs on.
3. Unless --no-checks: ruff check, ruff format --check and mypy --strict on
   the package (the same checks CI runs).
4. pytest, with any further arguments passed through; its exit status is ours.

The standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
KSERVE_VENV = ROOT / "build" / "venv-kserve"

# command the tests run -> the Debian package that provides it.
DEBIAN_TOOLS: dict[str, str] = {
    "curl": "curl",
    "nghttp": "nghttp2-client",
    "h2load": "nghttp2-client",
    "redis-server": "redis-server",
    "memcached": "memcached",
    # tests/test_page.py: the page at GET / in headless Chromium, through selenium.
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    # tests/test_server_http3.py: ngtcp2's HTTP/3 client, a QUIC stack not ours.
    "gtlsclient": "ngtcp2-client",
    # tests/test_cluster_demo.py: replicas behind a load balancer nobody here wrote.
    "haproxy": "haproxy",
    # tests/test_bench_lossy.py: random packet drop inside a network namespace.
    "nft": "nftables",
    # Both: network namespaces, veth pairs and a bridge.
    "ip": "iproute2",
    # tests/test_edge_check.py: the arm64 check script, linted.
    "shellcheck": "shellcheck",
}


def say(message: str) -> None:
    print(f"run_tests: {message}", flush=True)


def install_debian_tools() -> None:
    missing = sorted({pkg for tool, pkg in DEBIAN_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    can_install = (
        shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0
    )
    if not can_install:
        say(
            f"missing Debian packages {', '.join(missing)}: install them (apt-get install "
            f"{' '.join(missing)}, or your system's equivalent); tests that need them will fail"
        )
        return
    say(f"installing Debian packages: {', '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL, env=env)
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=False,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    if result.returncode != 0:
        say(f"apt-get install failed (exit status {result.returncode})")


def venv_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        say(f"creating {VENV.relative_to(ROOT)} with Python {sys.version.split()[0]}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    return python


def pip_install(python: Path) -> None:
    say("installing rawserve[test] (editable)")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-e", ".[test]"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        say("FAILED: pip install -e '.[test]'")
        sys.exit(1)


def kserve_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["kserve-sdk"])


def ensure_kserve_venv() -> Path:
    """build/venv-kserve with the kserve-sdk extra's pins; remade when they
    change (a stamp file holds what was installed). Its python, or SystemExit
    with pip's output when the install fails."""
    python = KSERVE_VENV / "bin" / "python"
    stamp = KSERVE_VENV / "rawserve-requirements.txt"
    wanted = "\n".join(kserve_requirements())
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"installing the kserve SDK into {KSERVE_VENV.relative_to(ROOT)} ({wanted})")
    shutil.rmtree(KSERVE_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(KSERVE_VENV)], check=True)
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted.split()],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"cannot install the kserve SDK into {KSERVE_VENV}")
    stamp.write_text(wanted)
    return python


def run_checks(python: Path) -> bool:
    checks = [
        ("ruff check", [str(python), "-m", "ruff", "check", "rawserve", "tests", "tools"]),
        (
            "ruff format --check",
            [str(python), "-m", "ruff", "format", "--check", "rawserve", "tests", "tools"],
        ),
        ("mypy --strict", [str(python), "-m", "mypy"]),
    ]
    ok = True
    for name, cmd in checks:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if result.returncode == 0:
            say(f"{name}: ok")
        else:
            ok = False
            sys.stdout.write(result.stdout + result.stderr)
            say(f"{name}: FAILED")
    return ok


def main(argv: list[str]) -> int:
    checks = True
    if "--no-checks" in argv:
        argv = [a for a in argv if a != "--no-checks"]
        checks = False
    os.chdir(ROOT)
    install_debian_tools()
    python = venv_python()
    pip_install(python)
    ensure_kserve_venv()
    checks_ok = run_checks(python) if checks else True
    status = subprocess.run([str(python), "-m", "pytest", "-q", *argv], cwd=ROOT).returncode
    if not checks_ok:
        say("the checks above failed")
        return status or 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
