#!/usr/bin/env python3
"""Run h2spec (HTTP/2 conformance) against ``python -m rawserve``, over TLS and h2c.

Starts the server on free ports, runs h2spec with a JUnit report per mode, and
compares the failed case ids with tools/h2spec_known_failures.txt. Exit status:
0 when every failure is a known one, 1 when any is not, 2 when h2spec or the
server could not be run.

    python tools/run_h2spec.py [--mode tls|h2c ...] [--app module:app] [--keep-reports DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KNOWN_FAILURES = ROOT / "tools" / "h2spec_known_failures.txt"
SHARED_H2SPEC = ROOT.parent / "shared" / "tools" / "h2spec"
KNOWN_HEADER = """\
# h2spec cases rawserve is known to fail, one per line, with the reason:
#   http2/5.1.1/2  # reason
# An id is the h2spec section and the case number within it (h2spec --dryrun
# lists them). Prefix a line with [tls] or [h2c] when only one mode fails it.
# tools/run_h2spec.py fails on any failure not listed here.
"""
MODES = ("tls", "h2c")
STARTUP_TIMEOUT_S = 60.0
# Past this many, further failures of one mode add nothing but scrolling.
MAX_LISTED = 40


class SetupError(Exception):
    """h2spec or the server could not be run; not a conformance result."""


@dataclass
class Result:
    mode: str
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # id -> title and message
    skipped: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.passed) + len(self.failed) + len(self.skipped)


def find_h2spec(workdir: Path) -> Path:
    """$H2SPEC, then PATH, then ../shared/tools/h2spec beside the repository."""
    env = os.environ.get("H2SPEC")
    if env:
        candidate = Path(env)
        if not candidate.is_file():
            raise SetupError(f"$H2SPEC is {env}, which is not a file")
    else:
        on_path = shutil.which("h2spec")
        candidate = Path(on_path) if on_path else SHARED_H2SPEC
        if not candidate.is_file():
            raise SetupError(
                f"h2spec not found: set $H2SPEC, put h2spec on PATH, or provide {SHARED_H2SPEC}"
            )
    if os.access(candidate, os.X_OK):
        return candidate
    # A copy of the tools folder can lose its run bit; run a private copy instead.
    copy = workdir / "h2spec"
    shutil.copyfile(candidate, copy)
    copy.chmod(copy.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return copy


def read_known_failures(path: Path = KNOWN_FAILURES) -> dict[str, set[str]]:
    """mode -> known failing case ids (lines without a [mode] tag apply to both)."""
    if not path.exists():
        path.write_text(KNOWN_HEADER)
    known: dict[str, set[str]] = {mode: set() for mode in MODES}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        modes: tuple[str, ...] = MODES
        if line.startswith("["):
            tag, _, line = line[1:].partition("]")
            if tag not in MODES:
                raise SetupError(f"{path.name}: unknown mode [{tag}] in line {raw!r}")
            modes = (tag,)
            line = line.strip()
        for mode in modes:
            known[mode].add(line)
    return known


def parse_junit(path: Path, mode: str) -> Result:
    """Case ids are ``<section package>/<1-based position in the section>``, the
    numbering ``h2spec --dryrun`` shows."""
    result = Result(mode)
    counters: dict[str, int] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        package = case.get("package", "?")
        counters[package] = counters.get(package, 0) + 1
        case_id = f"{package}/{counters[package]}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            detail = " / ".join((problem.text or problem.get("message") or "").split("\n"))
            result.failed[case_id] = f"{case.get('classname', '')}: {detail.strip()}"
        elif case.find("skipped") is not None:
            result.skipped.append(case_id)
        else:
            result.passed.append(case_id)
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(
                f"rawserve exited with status {proc.returncode} before listening:\n" + tail(log)
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SetupError(
        f"rawserve did not accept on port {port} within {STARTUP_TIMEOUT_S:g}s:\n" + tail(log)
    )


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    return "\n".join("    " + line for line in text[-lines:])


@contextlib.contextmanager
def rawserve(app: str | None, workdir: Path, extra: list[str]) -> Iterator[tuple[int, int, Path]]:
    """A running ``python -m rawserve``; yields (http_port, tls_port, log path)."""
    certs = workdir / "certs"
    http_port, tls_port = free_port(), free_port()
    while tls_port == http_port:
        tls_port = free_port()
    log = workdir / "rawserve.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    subprocess.run(
        [sys.executable, "-m", "rawserve", "certs", "--certs-dir", str(certs)],
        cwd=ROOT, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    cmd = [sys.executable, "-m", "rawserve", *([app] if app else [])]
    cmd += [
        "--host", "127.0.0.1",
        "--http-port", str(http_port),
        "--port", str(tls_port),
        "--quic-port", "0",
        "--certfile", str(certs / "dev-cert.pem"),
        "--keyfile", str(certs / "dev-key.pem"),
        "--log-level", "warning",
        "--graceful-timeout", "1",
        *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        wait_for_port(http_port, proc, log)
        wait_for_port(tls_port, proc, log)
        yield http_port, tls_port, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_mode(
    h2spec: Path, mode: str, port: int, timeout_s: int, path: str, reports: Path
) -> Result:
    report = reports / f"h2spec-{mode}.xml"
    cmd = [str(h2spec), "-h", "127.0.0.1", "-p", str(port), "-o", str(timeout_s), "-P", path]
    cmd += ["-j", str(report)]
    if mode == "tls":
        cmd += ["-t", "-k"]
    # Worst case every case waits out its timeout; past that h2spec itself hangs.
    limit = 146 * (timeout_s + 1) + 30
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=limit, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise SetupError(f"h2spec {mode} did not finish within {limit}s") from None
    (reports / f"h2spec-{mode}.txt").write_text(proc.stdout + proc.stderr)
    if not report.exists() or report.stat().st_size == 0:
        output = (proc.stdout + proc.stderr).strip().splitlines()[-10:]
        raise SetupError(
            f"h2spec {mode} wrote no report (status {proc.returncode}):\n"
            + "\n".join("    " + line for line in output)
        )
    return parse_junit(report, mode)


def summarize(result: Result, known: set[str]) -> list[str]:
    """The summary line, then one line per unexpected failure and stale entry."""
    known_failed = [case for case in result.failed if case in known]
    line = (
        f"h2spec {result.mode}: {result.total} tests, {len(result.passed)} passed, "
        f"{len(result.failed)} failed ({len(known_failed)} known)"
    )
    if result.skipped:
        line += f", {len(result.skipped)} skipped"
    lines = [line]
    unexpected = [(case, detail) for case, detail in result.failed.items() if case not in known]
    for case, detail in unexpected[:MAX_LISTED]:
        lines.append(f"  FAILED {case}  {detail}")
    if len(unexpected) > MAX_LISTED:
        lines.append(f"  ... and {len(unexpected) - MAX_LISTED} more unexpected failures")
    for case in sorted(known - set(result.failed)):
        if case in result.passed:
            lines.append(f"  note: {case} now passes; remove it from {KNOWN_FAILURES.name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", action="append", choices=MODES, help="default: both")
    parser.add_argument("--app", help="module:app to serve (default: the built-in app)")
    parser.add_argument("--path", default="/", help="request path h2spec uses (%(default)s)")
    parser.add_argument("--timeout", type=int, default=2, help="h2spec -o seconds (%(default)s)")
    parser.add_argument("--keep-reports", type=Path, help="copy JUnit and text reports here")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), help="server's --loop")
    args = parser.parse_args(argv)
    modes = args.mode or list(MODES)
    with tempfile.TemporaryDirectory(prefix="rawserve-h2spec-") as tmp:
        workdir = Path(tmp)
        try:
            h2spec = find_h2spec(workdir)
            known = read_known_failures()
            results: list[Result] = []
            extra = ["--loop", args.loop] if args.loop else []
            with rawserve(args.app, workdir, extra) as (http_port, tls_port, log):
                for mode in modes:
                    port = tls_port if mode == "tls" else http_port
                    results.append(run_mode(h2spec, mode, port, args.timeout, args.path, workdir))
        except (SetupError, subprocess.CalledProcessError) as exc:
            detail = (
                exc.stderr.decode(errors="replace")
                if isinstance(exc, subprocess.CalledProcessError) and exc.stderr
                else ""
            )
            print(f"run_h2spec: {exc}\n{detail}".rstrip(), file=sys.stderr)
            return 2
        finally:
            if args.keep_reports:
                args.keep_reports.mkdir(parents=True, exist_ok=True)
                for report in workdir.glob("h2spec-*"):
                    shutil.copy(report, args.keep_reports)
                if (workdir / "rawserve.log").exists():
                    shutil.copy(workdir / "rawserve.log", args.keep_reports)
        unexpected = 0
        for result in results:
            for line in summarize(result, known[result.mode]):
                print(line)
            unexpected += sum(1 for case in result.failed if case not in known[result.mode])
        if unexpected:
            print(f"run_h2spec: {unexpected} unexpected failure(s); server log tail:")
            print(tail(log))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
