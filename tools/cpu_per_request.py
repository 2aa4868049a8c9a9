"""Server CPU time per request of two or more rawserve builds, side by side.

    python tools/cpu_per_request.py base=HEAD~3 new=worktree
    python tools/cpu_per_request.py a=24b6aed b=ccda355 --rounds 5 --columns h1,h2c,h2s
    python tools/cpu_per_request.py x=worktree y=worktree --build-arg 'y=--max-batch-size 1'
    python tools/cpu_per_request.py base=HEAD new=worktree --quick        # smoke run

docs/PERFORMANCE.md ("How it was measured") gives the method this automates,
made for a small shared machine whose load moves rps by tens of percent:

- Each build is ``NAME=REV`` (``git archive REV rawserve``, so work in
  progress in the tree is not measured) or ``NAME=worktree`` (a copy of the
  tree's rawserve/ as it is now, uncommitted changes included), in a
  temporary directory, served by ``python -S -m rawserve`` with
  ``PYTHONPATH=<that tree>:<the venv's site-packages>``. ``-S``: the venv has
  rawserve installed in editable mode, whose import hook would win over
  PYTHONPATH; without site, PYTHONPATH decides which rawserve runs.
- Every server on ``--server-cpu`` and h2load on ``--client-cpu`` (taskset).
  The servers start one after another, so none is warming up (and timing
  its model for the run-on-the-loop choice) while another loads the core.
- Each (server, column) gets ``--warmup`` requests, then ``--rounds`` rounds:
  in each, every build gets the same h2load run per column, in an order
  rotated each round, so the machine's drift hits all builds alike.
- The figure is the server's CPU time per request answered: utime + stime of
  its process from /proc/<pid>/stat (all threads; and its workers', if
  ``--workers`` is passed on), read before and after the run. Tables give the
  median over rounds, and the median (with the range) of the per-round ratio
  build / first build: 0.80 is 20% less CPU per request than the first.

Columns (``--columns``): ``h1`` (``h2load --h1 -c 16 -m 1``), ``h2c``
(``-c 1 -m 16``, prior knowledge) and ``h2s`` (``-c 1 -m 16``, h2 by ALPN on
the TLS port, the development certificate in certs/). The request is the
benchmark's: the digits model's sample 0 as JSON to ``POST /predict``
(tools/bench.py). The servers run ``--no-cache --loop uvloop --no-access-log
--log-level warning``; ``--server-arg`` adds arguments to every build,
``--build-arg NAME=ARGS`` to one.

Any failure (a build that does not start, an answer that is not 2xx, a
missing h2load or taskset, a revision git does not know) stops the run with
a message and a non-zero exit status. Servers are killed and the temporary
trees removed whatever happens, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import bench  # tools/bench.py: the benchmark's body, certificate and h2load parsing

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / ".venv-bench"
WORKTREE = "worktree"
CLK_TCK = os.sysconf("SC_CLK_TCK")
COLUMNS = {
    "h1": "HTTP/1.1 `--h1 -c 16 -m 1`",
    "h2c": "h2c `-c 1 -m 16`",
    "h2s": "h2 over TLS `-c 1 -m 16`",
}
SHAPE = bench.Shape(h1_clients=16, h2_clients=1, h2_streams=16)
FULL = {"requests": 10_000, "warmup": 2_000, "rounds": 5}
QUICK = {"requests": 200, "warmup": 50, "rounds": 2}
SERVER_ARGS = ["--no-cache", "--log-level", "warning", "--no-access-log"]


class Failure(Exception):
    """Stops the run; the message says why."""


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- builds ---------------------------------------------------------------------------


@dataclass
class Build:
    name: str
    source: str  # a git revision, or "worktree"
    commit: str = ""  # what it resolved to (the worktree: HEAD, plus what is not committed)
    args: list[str] = field(default_factory=list)
    tree: Path = Path()
    pid: int = 0


def git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True)


def resolve(build: Build) -> None:
    """Fill in ``build.commit``, or Failure when git does not know the revision."""
    if build.source == WORKTREE:
        head = git("rev-parse", "--short", "HEAD").stdout.decode().strip()
        dirty = git("status", "--porcelain", "--", "rawserve").stdout.decode().splitlines()
        build.commit = head + (f" + {len(dirty)} uncommitted path(s) in rawserve/" if dirty else "")
        return
    done = git("rev-parse", "--verify", "--quiet", "--short", f"{build.source}^{{commit}}")
    if done.returncode != 0:
        raise Failure(f"{build.name}={build.source}: not a git revision (commit) in {ROOT}")
    build.commit = done.stdout.decode().strip()


def make_tree(build: Build, workdir: Path) -> None:
    """The build's rawserve/ in a directory of its own."""
    build.tree = workdir / f"tree-{build.name}"
    build.tree.mkdir()
    if build.source == WORKTREE:
        shutil.copytree(
            ROOT / "rawserve",
            build.tree / "rawserve",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        return
    done = git("archive", "--format=tar", build.commit, "rawserve")
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise Failure(f"{build.name}={build.source}: git archive failed: {message}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(build.tree, filter="data")


# -- servers --------------------------------------------------------------------------


@dataclass
class Server:
    build: Build
    process: subprocess.Popen[bytes]
    http_port: int
    tls_port: int
    log: Path

    def url(self, column: str) -> str:
        if column == "h2s":
            return f"https://127.0.0.1:{self.tls_port}/predict"
        return f"http://127.0.0.1:{self.http_port}/predict"

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def alive_or_fail(self, doing: str) -> None:
        if self.process.poll() is not None:
            raise Failure(
                f"{self.build.name}: the server exited with status {self.process.returncode} "
                f"{doing}; its log ends:\n{self.log_tail()}"
            )


def site_packages(python: Path) -> list[str]:
    """The venv's site-packages, for PYTHONPATH (``-S`` leaves them out of sys.path)."""
    code = (
        "import json, sysconfig; "
        "print(json.dumps([sysconfig.get_path(k) for k in ('purelib', 'platlib')]))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise Failure(f"{python} does not run: {done.stderr.strip()[-500:]}")
    return list(dict.fromkeys(json.loads(done.stdout)))


def start(
    build: Build,
    python: Path,
    packages: Sequence[str],
    args: argparse.Namespace,
    workdir: Path,
    servers: list[Server],
) -> Server:
    """Start ``build``'s server and add it to ``servers`` at once, so that it
    is stopped whatever happens next."""
    http_port = bench.free_port()
    tls_port = bench.free_port() if "h2s" in args.columns else -1
    cmd = [str(python), "-S", "-m", "rawserve", "--host", "127.0.0.1"]
    cmd += ["--http-port", str(http_port), "--port", str(tls_port), "--quic-port", "0"]
    if tls_port != -1:
        cmd += ["--certfile", str(bench.CERT), "--keyfile", str(bench.KEY)]
    cmd += ["--loop", args.loop, *SERVER_ARGS, *args.server_arg, *build.args]
    cmd = ["taskset", "-c", args.server_cpu, *cmd]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(build.tree), *packages]))
    # What the server writes to its temporary directory (ONNX Runtime leaves
    # a .ses file there) goes away with ours.
    env["TMPDIR"] = str(workdir)
    log = workdir / f"server-{build.name}.log"
    with log.open("wb") as out:
        # A session of its own: Ctrl-C in the terminal reaches this script,
        # which stops the server itself (and any workers it forked, by group).
        process = subprocess.Popen(
            cmd,
            cwd=build.tree,  # python -m puts the working directory first on sys.path
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(build, process, http_port, tls_port, log)
    servers.append(server)
    # taskset execs the server, so this pid is the server's own.
    build.pid = process.pid
    return server


def request(url: str, body: bytes | None, timeout_s: float) -> tuple[int, bytes]:
    headers = {"content-type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=bench.INSECURE) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_ready(server: Server, body: bytes, timeout_s: float) -> None:
    """/readyz answers 200, then one /predict with the benchmark's body must
    be 2xx (a build that cannot serve it fails here, with its answer)."""
    base = f"http://127.0.0.1:{server.http_port}"
    deadline = time.monotonic() + timeout_s
    while True:
        server.alive_or_fail("while starting")
        if request(base + "/readyz", None, 1.0)[0] == 200:
            break
        if time.monotonic() > deadline:
            raise Failure(
                f"{server.build.name}: not ready after {timeout_s:.0f} s; "
                f"its log ends:\n{server.log_tail()}"
            )
        time.sleep(0.05)
    status, answer = request(base + "/predict", body, 10.0)
    if not 200 <= status < 300:
        raise Failure(
            f"{server.build.name}: POST /predict answered {status or 'nothing'}: "
            f"{answer[:300].decode(errors='replace')}"
        )


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (all its threads) and of its descendants
    (workers), with the children they reaped (cutime + cstime)."""
    total = 0
    for each in bench.tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])
    return total


def stop(server: Server) -> None:
    bench.stop(server.process)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the cleanup runs for both."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- runs -----------------------------------------------------------------------------


@dataclass
class Run:
    round: int  # 0: the warm-up
    column: str
    build: str
    position: int  # the build's place in this round's order
    requests: int
    answered: int  # 2xx
    cpu_ticks: int
    cpu_us: float  # server CPU per request answered
    rps: float
    protocol: str


def load(
    server: Server,
    column: str,
    requests: int,
    body: Path,
    args: argparse.Namespace,
    workdir: Path,
    round_: int,
    position: int,
) -> Run:
    log = workdir / "h2load.log"
    cmd = bench.h2load_cmd(
        server.url(column), column, SHAPE, body, args.client_cpu, log, requests=requests
    )
    server.alive_or_fail("before the run")
    before = cpu_ticks(server.process.pid)
    got = bench.run_h2load(cmd, log, requests, args.run_timeout)
    after = cpu_ticks(server.process.pid)
    server.alive_or_fail(f"during the {column} run")
    what = f"{server.build.name}, {column}, {'warm-up' if round_ == 0 else f'round {round_}'}"
    if got.note:
        raise Failure(f"{what}: {got.note}")
    answered = got.codes[0]
    if answered != requests or got.failed or got.errored or got.timeout:
        raise Failure(
            f"{what}: {answered} of {requests} requests answered 2xx (status codes 2xx, 3xx, "
            f"4xx, 5xx: {got.codes}; failed {got.failed}, errored {got.errored}, "
            f"timeout {got.timeout}); the server's log ends:\n{server.log_tail()}"
        )
    if got.protocol != bench.SPOKEN[column]:
        raise Failure(f"{what}: h2load spoke {got.protocol or '?'}, not {bench.SPOKEN[column]}")
    ticks = after - before
    return Run(
        round_,
        column,
        server.build.name,
        position,
        requests,
        answered,
        ticks,
        ticks / CLK_TCK / answered * 1e6,
        answered / got.seconds if got.seconds else 0.0,
        got.protocol,
    )


def measure(
    servers: Sequence[Server], args: argparse.Namespace, body: Path, workdir: Path
) -> list[Run]:
    runs: list[Run] = []
    for server in servers:
        for column in args.columns:
            load(server, column, args.warmup, body, args, workdir, 0, 0)
        say(f"warmed up {server.build.name} ({args.warmup} requests per column)")
    for round_ in range(1, args.rounds + 1):
        shift = (round_ - 1) % len(servers)
        order = [*servers[shift:], *servers[:shift]]
        for column in args.columns:
            for position, server in enumerate(order):
                run = load(server, column, args.requests, body, args, workdir, round_, position)
                runs.append(run)
                say(
                    f"round {round_}/{args.rounds} {column:>3} {run.build}: "
                    f"{run.cpu_us:,.0f} µs per request, {run.rps:,.0f} req/s"
                )
    return runs


# -- report ---------------------------------------------------------------------------


def summarize(
    runs: Sequence[Run], builds: Sequence[Build], columns: Sequence[str]
) -> dict[str, Any]:
    """Per column and build: medians over the rounds, and the per-round
    ratios of CPU per request against the first build."""
    first = builds[0].name
    out: dict[str, Any] = {}
    for column in columns:
        by_round: dict[int, dict[str, Run]] = {}
        for run in runs:
            if run.column == column:
                by_round.setdefault(run.round, {})[run.build] = run
        cells: dict[str, Any] = {}
        for build in builds:
            mine = [r[build.name] for r in by_round.values()]
            ratios = [
                r[build.name].cpu_us / r[first].cpu_us for r in by_round.values() if r[first].cpu_us
            ]
            cells[build.name] = {
                "cpu_us": statistics.median(r.cpu_us for r in mine),
                "rps": statistics.median(r.rps for r in mine),
                "rounds": len(mine),
                "requests_answered": sum(r.answered for r in mine),
                "ratio": statistics.median(ratios) if ratios else None,
                "ratio_min": min(ratios) if ratios else None,
                "ratio_max": max(ratios) if ratios else None,
                "ratios": ratios,
            }
        out[column] = cells
    return out


def table(summary: dict[str, Any], builds: Sequence[Build], args: argparse.Namespace) -> str:
    first = builds[0].name
    lines = [
        f"Server CPU per request, median of {args.rounds} interleaved rounds of "
        f"{args.requests:,} requests (after {args.warmup:,} of warm-up); "
        f"/ {first}: median of the per-round ratios, range in brackets.",
        "",
        f"| column | build | CPU per request | / {first} | req/s |",
        "|---|---|---:|---:|---:|",
    ]
    for column, cells in summary.items():
        for i, build in enumerate(builds):
            cell = cells[build.name]
            ratio = "1" if i == 0 else "?"
            if i and cell["ratio"] is not None:
                ratio = f"{cell['ratio']:.2f} ({cell['ratio_min']:.2f}..{cell['ratio_max']:.2f})"
            lines.append(
                f"| {COLUMNS[column] if i == 0 else ''} | {build.name} | "
                f"{cell['cpu_us']:,.0f} µs | {ratio} | {cell['rps']:,.0f} |"
            )
    lines.append("")
    for build in builds:
        extra = f", args {shlex.join(build.args)}" if build.args else ""
        lines.append(f"- {build.name}: {build.source} ({build.commit}){extra}")
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cpu_per_request.py",
        description="Server CPU per request of two or more rawserve builds, side by side.",
    )
    parser.add_argument(
        "builds",
        nargs="+",
        metavar="NAME=REV",
        help=f"a build: a git revision, or '{WORKTREE}' (the tree as it is now); at least two",
    )
    parser.add_argument("--columns", default="h1,h2c,h2s", help="of h1, h2c, h2s (h1,h2c,h2s)")
    parser.add_argument("--requests", type=int, help=f"per run ({FULL['requests']:,})")
    parser.add_argument(
        "--warmup", type=int, help=f"per server and column, before the rounds ({FULL['warmup']:,})"
    )
    parser.add_argument("--rounds", type=int, help=f"({FULL['rounds']})")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--server-cpu", default="0", help="taskset -c for the servers (0)")
    parser.add_argument("--client-cpu", default="1", help="taskset -c for h2load (1)")
    parser.add_argument(
        "--venv",
        type=Path,
        default=DEFAULT_VENV,
        help="the virtualenv whose python and site-packages run the servers (.venv-bench)",
    )
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for every server (repeatable; --server-arg=--flag)",
    )
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="more arguments for one build's server, shell-quoted ('new=--max-batch-size 1')",
    )
    parser.add_argument("--json", type=Path, help="write the runs and the summary here")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds (120)")
    parser.add_argument("--run-timeout", type=float, default=300.0, help="per h2load run (300)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.requests, args.rounds) < 1 or args.warmup < 0:
        parser.error("--requests and --rounds must be at least 1, --warmup at least 0")
    args.columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    unknown = [c for c in args.columns if c not in COLUMNS]
    if unknown or not args.columns:
        parser.error(
            f"--columns: unknown {', '.join(unknown) or '(none)'}; of {', '.join(COLUMNS)}"
        )
    builds: list[Build] = []
    for spec in args.builds:
        name, sep, source = spec.partition("=")
        if not sep or not name or not source:
            parser.error(f"{spec!r}: a build is NAME=REV or NAME={WORKTREE}")
        if any(b.name == name for b in builds):
            parser.error(f"two builds named {name!r}")
        builds.append(Build(name, source))
    if len(builds) < 2:
        parser.error("give at least two builds to compare")
    for spec in args.build_arg:
        name, _, extra = spec.partition("=")
        build = next((b for b in builds if b.name == name), None)
        if build is None:
            parser.error(f"--build-arg {spec!r}: no build named {name!r}")
        build.args += shlex.split(extra)
    args.builds = builds
    return args


def cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def check_environment(args: argparse.Namespace) -> Path:
    """The servers' python, or Failure naming what is missing."""
    for tool, package in (("h2load", "nghttp2-client"), ("taskset", "util-linux"), ("git", "git")):
        if shutil.which(tool) is None:
            raise Failure(f"{tool} not found on PATH (Debian package: {package})")
    python = Path(args.venv) / "bin" / "python"
    if not python.exists():
        raise Failure(
            f"no {python}: make the bench venv (python3 -m venv .venv-bench && "
            ".venv-bench/bin/pip install -e '.[bench]') or pass --venv"
        )
    cpus = os.sched_getaffinity(0)
    for option, value in (("--server-cpu", args.server_cpu), ("--client-cpu", args.client_cpu)):
        try:
            wanted = cpu_list(value)
        except ValueError:
            raise Failure(
                f"{option} {value!r}: a CPU list as taskset -c takes it (0, 0,1, 0-1)"
            ) from None
        if not wanted <= cpus:
            raise Failure(f"{option} {value}: not among this machine's CPUs {sorted(cpus)}")
    return python


def check_python(python: Path, packages: Sequence[str], loop: str, workdir: Path) -> None:
    """The servers' imports resolve with -S and the venv's site-packages."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(packages), TMPDIR=str(workdir))
    modules = ["onnxruntime", "numpy", "h2"] + (["uvloop"] if loop == "uvloop" else [])
    for module in modules:
        done = subprocess.run(
            [str(python), "-S", "-c", f"import {module}"], env=env, capture_output=True
        )
        if done.returncode != 0:
            hint = " (pip install uvloop, or --loop asyncio)" if module == "uvloop" else ""
            raise Failure(f"{python} cannot import {module} from {', '.join(packages)}{hint}")


def run(args: argparse.Namespace, workdir: Path, servers: list[Server]) -> dict[str, Any]:
    builds: list[Build] = args.builds
    python = check_environment(args)
    for build in builds:
        resolve(build)
    packages = site_packages(python)
    check_python(python, packages, args.loop, workdir)
    if "h2s" in args.columns and not (bench.CERT.exists() and bench.KEY.exists()):
        say(f"making the development certificate in {bench.CERT.parent}")
        subprocess.run([str(python), "-m", "rawserve", "certs"], cwd=ROOT, check=True)
    body = workdir / "body.json"
    body.write_bytes(bench.MODELS["digits"].body())
    for build in builds:
        make_tree(build, workdir)
    load_before = os.getloadavg()
    for build in builds:
        # One at a time: a server's warm-up times its model's runs to choose
        # where they go, which another server starting on the core would skew.
        server = start(build, python, packages, args, workdir, servers)
        wait_ready(server, body.read_bytes(), args.ready_timeout)
        say(f"started {build.name} ({build.source}, {build.commit}), pid {build.pid}")
    runs = measure(servers, args, body, workdir)
    summary = summarize(runs, builds, args.columns)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python tools/cpu_per_request.py " + shlex.join(args.argv),
        "python": str(python),
        "loop": args.loop,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "requests": args.requests,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "columns": args.columns,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "builds": [
            {"name": b.name, "source": b.source, "commit": b.commit, "args": b.args, "pid": b.pid}
            for b in builds
        ],
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    servers: list[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="rawserve-cpu-"))
    try:
        with terminate_as_interrupt():
            try:
                report = run(args, workdir, servers)
            finally:
                for server in servers:
                    stop(server)
    except Failure as exc:
        say(f"cpu_per_request: error: {exc}")
        return 1
    except KeyboardInterrupt:
        say("cpu_per_request: interrupted; servers stopped")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load = report["load_average"]
    text = table(report["summary"], args.builds, args)
    text += (
        f"\n\nLoad average {load['before'][0]:.1f} before, {load['after'][0]:.1f} after; "
        f"servers on CPU {args.server_cpu}, h2load on CPU {args.client_cpu}, {args.loop}."
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
