"""rawserve and its peers side by side, at the HTTP level, in one run.

    python tools/bench.py                                   # health, A and B; all servers
    python tools/bench.py --workloads A --servers rawserve,uvicorn --rounds 3
    python tools/bench.py --workloads B --requests 4000 --concurrency 16 --h2-concurrency 4x16

Servers (the peers are benchmark-only; ``pip install -e '.[bench]'``):

- ``rawserve``: ``python -m rawserve`` (its built-in inference app), uvloop;
- ``uvicorn``: tools/peers/fastapi_app.py on uvicorn with httptools and
  uvloop (HTTP/1.1 only);
- ``hypercorn``: the same app on hypercorn with uvloop (HTTP/1.1 and h2c);
- ``granian``: the same app on granian, ASGI interface, uvloop (HTTP/1.1 and
  h2c).

Workloads:

- ``health``: ``GET /healthz`` answering ``{"status": "ok"}``: the server's
  own overhead;
- ``A``: ``POST /predict`` on the bundled digits classifier (64 floats in);
- ``B``: ``POST /predict`` on the synthetic memory-bound MLP
  (build/models/mlp.onnx, 256 floats in; made with tools/make_models.py when
  missing). rawserve batches concurrent requests; the FastAPI app runs one
  request at a time per threadpool thread, as FastAPI apps do.

Model C (3x64x64 in) is not offered: rawserve's ``/predict`` takes one row or
a list of rows (2-D), so a 4-D input needs the V2 endpoint, which the FastAPI
peer does not have.

Every request body is the same file for every server (a fixed row: a digits
sample for A, seeded random floats for B). The load generator is h2load,
``--h1`` for HTTP/1.1 (``--concurrency`` connections, one request at a time
each) and prior-knowledge h2c (``--h2-concurrency CxM``: C connections with M
streams each). The servers are pinned to ``--server-cpu`` and h2load to
``--client-cpu``. For each model, every server is started on a free port of
127.0.0.1 and waited for (rawserve: ``/readyz``), each (server, protocol) is
warmed up, and then ``--rounds`` rounds are run, each round running every
(server, protocol) once, so a shared machine's drift hits all of them alike.
The table gives medians over rounds of req/s and of the p50 and p99 latency
(from h2load's per-request log), and rawserve's req/s over the peer's on the
same protocol (the median of per-round ratios, with their range). Any failed
or non-2xx request is counted in the "errors" column and listed after the
table. Every server's process group is killed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tools" / "peers"
BUILD_MODELS = ROOT / "build" / "models"
DIGITS = ROOT / "rawserve" / "models" / "digits.onnx"
PYTHON = sys.executable
BIN = Path(PYTHON).parent

SERVERS = ("rawserve", "uvicorn", "hypercorn", "granian")
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "rawserve": ("h1", "h2c"),
    "uvicorn": ("h1",),
    "hypercorn": ("h1", "h2c"),
    "granian": ("h1", "h2c"),
}
PEER_PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "httptools",
    "hypercorn",
    "granian",
    "uvloop",
    "onnxruntime",
    "numpy",
    "h2",
)


@dataclass(frozen=True)
class Workload:
    name: str
    model: str  # which model the servers load: "digits" or "mlp"
    path: str
    method: str
    default_requests: int
    description: str


WORKLOADS = {
    "health": Workload("health", "digits", "/healthz", "GET", 20000, "GET /healthz"),
    "A": Workload("A", "digits", "/predict", "POST", 20000, "POST /predict, digits (64 floats)"),
    "B": Workload("B", "mlp", "/predict", "POST", 4000, "POST /predict, MLP B (256 floats)"),
}


# -- models and bodies ----------------------------------------------------------------


def model_path(model: str) -> Path:
    if model == "digits":
        return DIGITS
    path = BUILD_MODELS / f"{model}.onnx"
    if not path.is_file():
        print(f"making {path} (tools/make_models.py {model})", file=sys.stderr)
        subprocess.run([PYTHON, str(ROOT / "tools" / "make_models.py"), model], check=True)
    return path


def write_body(workload: Workload, directory: Path) -> Path | None:
    """The one request body every server gets for ``workload`` (None: a GET)."""
    if workload.method == "GET":
        return None
    if workload.model == "digits":
        meta = json.loads((ROOT / "rawserve" / "models" / "digits.json").read_text())
        row: list[float] = [float(v) for v in meta["samples"]["inputs"][0]]
    else:
        import numpy as np

        rng = np.random.default_rng(0)
        row = [round(float(v), 5) for v in rng.standard_normal(256)]
    path = directory / f"body-{workload.name}.json"
    path.write_text(json.dumps({"inputs": row}))
    return path


# -- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    ready_path: str


def server_command(
    name: str, model: str, port: int, workdir: Path, rawserve_args: Sequence[str]
) -> tuple[list[str], str]:
    """The command line that serves ``model`` on ``port``, and the path that
    answers 200 once it is ready."""
    host = "127.0.0.1"
    if name == "rawserve":
        cmd = [
            PYTHON,
            "-m",
            "rawserve",
            "--host",
            host,
            "--http-port",
            str(port),
            "--port",
            "-1",
            "--quic-port",
            "0",
            "--loop",
            "uvloop",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        if model != "digits":
            cmd += ["--model", f"{model}={model_path(model)}"]
        return cmd + list(rawserve_args), "/readyz"
    if name == "uvicorn":
        return [
            str(BIN / "uvicorn"),
            "--app-dir",
            str(PEERS),
            "fastapi_app:app",
            "--host",
            host,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ], "/healthz"
    if name == "hypercorn":
        # Hypercorn closes a connection after 1000 requests by default, which
        # h2load counts as errors.
        config = workdir / "hypercorn.toml"
        config.write_text("keep_alive_max_requests = 10000000\n")
        return [
            str(BIN / "hypercorn"),
            "--config",
            str(config),
            "--worker-class",
            "uvloop",
            "--bind",
            f"{host}:{port}",
            "--log-level",
            "warning",
            "fastapi_app:app",
        ], "/healthz"
    if name == "granian":
        return [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            "--host",
            host,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "auto",
            "--log-level",
            "warning",
            "--no-access-log",
            "fastapi_app:app",
        ], "/healthz"
    raise ValueError(f"unknown server {name!r}")


def start_server(
    name: str, model: str, workdir: Path, cpu: str | None, rawserve_args: Sequence[str]
) -> Server:
    port = free_port()
    cmd, ready_path = server_command(name, model, port, workdir, rawserve_args)
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    env = dict(os.environ)
    env["RAWSERVE_BENCH_MODEL"] = str(model_path(model))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PEERS), env.get("PYTHONPATH")) if p)
    log = workdir / f"{name}-{model}.log"
    with log.open("wb") as out:
        # A session of its own, so that killing the group also kills any
        # worker process the server spawns (granian does).
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name, port, process, log, ready_path)


def wait_ready(server: Server, timeout_s: float) -> None:
    url = f"http://127.0.0.1:{server.port}{server.ready_path}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}; "
                f"log:\n{server.log.read_text()[-2000:]}"
            )
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(
        f"{server.name} not ready after {timeout_s}s; log:\n{server.log.read_text()[-2000:]}"
    )


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
    # The group may outlive its leader (a worker process): kill what is left.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(5)


@contextlib.contextmanager
def running(
    names: Sequence[str],
    model: str,
    workdir: Path,
    cpu: str | None,
    rawserve_args: Sequence[str],
    ready_timeout_s: float,
) -> Iterator[dict[str, Server]]:
    servers: dict[str, Server] = {}
    try:
        for name in names:
            servers[name] = start_server(name, model, workdir, cpu, rawserve_args)
        for server in servers.values():
            wait_ready(server, ready_timeout_s)
        yield servers
    finally:
        for server in servers.values():
            stop_server(server)


def check_answers(servers: dict[str, Server], workload: Workload, body: Path | None) -> None:
    """One request to every server before the load: each must answer 200, and
    the /predict answers must agree (same prediction and model, confidence
    within 1e-4), or the comparison would be between different work."""
    answers: dict[str, dict[str, object]] = {}
    for name, server in servers.items():
        data = body.read_bytes() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}{workload.path}",
            data=data,
            headers={"content-type": "application/json"},
            method=workload.method,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"{name} answered {response.status} to {workload.description}")
            answers[name] = json.loads(response.read())
    first_name, first = next(iter(answers.items()))
    for name, answer in answers.items():
        same = answer.keys() == first.keys() and all(
            abs(float(v) - float(first[k])) <= 1e-4 if k == "confidence" else v == first[k]  # type: ignore[arg-type]
            for k, v in answer.items()
        )
        if not same:
            raise RuntimeError(
                f"{workload.name}: {name} answered {answer}, {first_name} answered {first}"
            )
    print(f"   {workload.name}: every server answers {first}", file=sys.stderr)


# -- load ------------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    succeeded: int
    failed: int
    errored: int
    timeout: int
    non_2xx: int
    note: str = ""
    unverified: int = 0  # responses h2load could not read a status from (see h2load())

    @property
    def errors(self) -> int:
        return self.failed + self.errored + self.timeout + self.non_2xx


FINISHED = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")
REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout"
)
STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def h2load(
    url: str,
    protocol: str,
    body: Path | None,
    requests: int,
    h1_clients: int,
    h2_clients: int,
    h2_streams: int,
    cpu: str | None,
    timeout_s: float,
    workdir: Path,
    empty_reason: bool = False,
) -> Run:
    """One h2load run. ``empty_reason``: the server sends HTTP/1.1 status lines
    without a reason phrase ("HTTP/1.1 200 "), hypercorn's h11 does; h2load
    1.52 only records a status from llhttp's reason-phrase callback, so it
    counts every such response "failed" with no status code. Those are then
    reported as unverified rather than failed (check_answers() has checked
    that the server answers 200 with the right body)."""
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)
    cmd = ["h2load", "-n", str(requests), f"--log-file={log}"]
    if protocol == "h1":
        cmd += ["--h1", "-c", str(h1_clients), "-m", "1"]
    else:
        cmd += ["-c", str(h2_clients), "-m", str(h2_streams)]
    if body is not None:
        cmd += ["-d", str(body), "-H", "content-type: application/json"]
    cmd.append(url)
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Run(
            0.0,
            float("nan"),
            float("nan"),
            0,
            requests,
            0,
            0,
            0,
            f"h2load did not finish in {timeout_s}s",
        )
    out = done.stdout
    finished, counts, status = FINISHED.search(out), REQUESTS.search(out), STATUS.search(out)
    if finished is None or counts is None or status is None:
        return Run(
            0.0,
            float("nan"),
            float("nan"),
            0,
            requests,
            0,
            0,
            0,
            f"h2load exit {done.returncode}: {(out + done.stderr)[-500:]}",
        )
    _, _, _, succeeded, failed, errored, timed_out = (int(v) for v in counts.groups())
    codes = [int(v) for v in status.groups()]
    unverified = 0
    if empty_reason and protocol == "h1" and sum(codes) == 0 and failed == requests:
        unverified, failed = failed, 0
    latencies = sorted(
        int(line.split("\t")[2]) / 1000
        for line in log.read_text().splitlines()
        if line.count("\t") >= 2
    )
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return Run(
        float(finished.group(1)),
        p50,
        p99,
        succeeded,
        failed,
        errored,
        timed_out,
        sum(codes[1:]),
        unverified=unverified,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    rank = max(1, round(q / 100 * len(values) + 0.5))
    return values[min(rank, len(values)) - 1]


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Cell:
    workload: str
    server: str
    protocol: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))


class Progress:
    """A progress bar for one scenario on stderr, redrawn in place when stderr
    is a terminal (a log file gets the per-run lines only)."""

    WIDTH = 30

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = max(1, total)
        self.done = 0
        self.stream = stream
        self.live = stream.isatty()
        self.note = ""
        self._draw()

    def bar(self) -> str:
        filled = self.WIDTH * self.done // self.total
        return (
            f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} "
            f"{self.label}{': ' + self.note if self.note else ''}"
        )

    def start(self, note: str) -> None:
        """Say what runs now (the bar does not move until it is done)."""
        self.note = note
        self._draw()

    def step(self, line: str | None = None) -> None:
        """One run done; ``line``, if any, is printed above the bar."""
        self.done += 1
        if line is not None:
            self.print(line)
        self._draw()

    def print(self, line: str) -> None:
        if self.live:
            self.stream.write("\r\033[K")
        print(line, file=self.stream)
        self._draw()

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _draw(self) -> None:
        if self.live:
            self.stream.write("\r\033[K" + self.bar())
            self.stream.flush()


def bench(args: argparse.Namespace, workdir: Path) -> list[Cell]:
    h2_clients, h2_streams = (int(v) for v in args.h2_concurrency.split("x"))
    cells: dict[tuple[str, str, str], Cell] = {}
    by_model: dict[str, list[Workload]] = {}
    for name in args.workloads:
        by_model.setdefault(WORKLOADS[name].model, []).append(WORKLOADS[name])
    for model, workloads in by_model.items():
        print(f"== model {model}: starting {', '.join(args.servers)}", file=sys.stderr)
        with running(
            args.servers, model, workdir, args.server_cpu, args.rawserve_arg, args.ready_timeout
        ) as servers:
            for workload in workloads:
                body = write_body(workload, workdir)
                check_answers(servers, workload, body)
                requests = args.requests or workload.default_requests
                pairs = [(s, p) for s in args.servers for p in PROTOCOLS[s] if p in args.protocols]

                def one(server: str, protocol: str, n: int) -> Run:
                    url = f"http://127.0.0.1:{servers[server].port}{workload.path}"  # noqa: B023
                    return h2load(
                        url,
                        protocol,
                        body,  # noqa: B023
                        n,
                        args.concurrency,
                        h2_clients,
                        h2_streams,
                        args.client_cpu,
                        args.timeout,
                        workdir,
                        empty_reason=server == "hypercorn",
                    )

                progress = Progress(workload.name, len(pairs) * (1 + args.rounds))
                for server, protocol in pairs:
                    progress.start(f"warm-up {server} {protocol}")
                    warm = one(server, protocol, args.warmup or max(500, requests // 10))
                    progress.step(
                        f"   warm-up {server} {protocol}: {warm.errors} errors {warm.note}"
                        if warm.errors
                        else None
                    )
                for round_ in range(args.rounds):
                    for server, protocol in pairs:
                        progress.start(f"round {round_ + 1} {server} {protocol}")
                        run = one(server, protocol, requests)
                        cell = cells.setdefault(
                            (workload.name, server, protocol), Cell(workload.name, server, protocol)
                        )
                        cell.runs.append(run)
                        progress.step(
                            f"   {workload.name} round {round_ + 1} {server:9} {protocol:3} "
                            f"{run.rps:10,.0f} req/s  p50 {run.p50_ms:7.2f} ms  "
                            f"p99 {run.p99_ms:7.2f} ms  errors {run.errors} {run.note}"
                        )
                progress.close()
    return list(cells.values())


# -- report ------------------------------------------------------------------------------------


def table(cells: Sequence[Cell], args: argparse.Namespace) -> str:
    h2c = args.h2_concurrency.replace("x", " conn x ") + " streams"
    lines = [
        "| workload | protocol | server | req/s | p50 ms | p99 ms | rawserve / this | "
        "ratio range | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for workload in args.workloads:
        for protocol in ("h1", "h2c"):
            row_cells = [c for c in cells if c.workload == workload and c.protocol == protocol]
            base = next((c for c in row_cells if c.server == "rawserve"), None)
            for cell in row_cells:
                ratio = ratio_range = ""
                if base is not None and cell is not base:
                    ratios = [
                        b.rps / r.rps
                        for b, r in zip(base.runs, cell.runs, strict=True)
                        if r.rps > 0
                    ]
                    if ratios:
                        ratio = f"{statistics.median(ratios):.2f}x"
                        ratio_range = f"{min(ratios):.2f}..{max(ratios):.2f}"
                name = f"**{cell.server}**" if cell is base else cell.server
                load = f"-c {args.concurrency}" if protocol == "h1" else h2c
                lines.append(
                    f"| {workload} | {protocol} ({load}) | {name} | {cell.median('rps'):,.0f} | "
                    f"{cell.median('p50_ms'):.2f} | {cell.median('p99_ms'):.2f} | {ratio} | "
                    f"{ratio_range} | {errors_cell(cell)} |"
                )
    return "\n".join(lines)


def errors_cell(cell: Cell) -> str:
    errors = sum(r.errors for r in cell.runs)
    unverified = sum(r.unverified for r in cell.runs)
    return f"{errors} ({unverified} unverified\\*)" if unverified else str(errors)


def errors_report(cells: Sequence[Cell]) -> str:
    lines = []
    for cell in cells:
        for i, run in enumerate(cell.runs):
            if run.errors:
                lines.append(
                    f"- {cell.workload} {cell.server} {cell.protocol} round {i + 1}: "
                    f"{run.failed} failed, {run.errored} errored, {run.timeout} timeout, "
                    f"{run.non_2xx} non-2xx. {run.note}"
                )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in PEER_PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    h2load_version = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        h2load_version = subprocess.run(
            ["h2load", "--version"], capture_output=True, text=True
        ).stdout.strip()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {h2load_version}; " + ", ".join(versions)
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def names(choices: Sequence[str]) -> Callable[[str], list[str]]:
        def parse(text: str) -> list[str]:
            items = [t.strip() for t in text.split(",") if t.strip()]
            unknown = [t for t in items if t not in choices]
            if unknown or not items:
                raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
            return items

        return parse

    parser.add_argument(
        "--workloads",
        type=names(tuple(WORKLOADS)),
        default=list(WORKLOADS),
        help="comma-separated: health, A, B (default: all)",
    )
    parser.add_argument(
        "--servers",
        type=names(SERVERS),
        default=list(SERVERS),
        help="comma-separated: " + ", ".join(SERVERS) + " (default: all)",
    )
    parser.add_argument("--protocols", type=names(("h1", "h2c")), default=["h1", "h2c"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--requests",
        type=int,
        default=0,
        help="requests per measured run (default: per workload, "
        + ", ".join(f"{w.name} {w.default_requests}" for w in WORKLOADS.values())
        + ")",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="warm-up requests per server and protocol (default: a tenth of "
        "--requests, at least 500)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="HTTP/1.1 connections, one request in flight each (16)",
    )
    parser.add_argument(
        "--h2-concurrency",
        default="4x16",
        help="h2c connections x concurrent streams per connection (4x16)",
    )
    parser.add_argument("--server-cpu", default="0", help="taskset CPU list for servers (0)")
    parser.add_argument("--client-cpu", default="1", help="taskset CPU list for h2load (1)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds one h2load run may take before it is killed (120)",
    )
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument(
        "--rawserve-arg",
        action="append",
        default=[],
        help="extra argument for python -m rawserve (repeatable), "
        "e.g. --rawserve-arg=--max-batch-delay-ms=0",
    )
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d+x\d+", args.h2_concurrency):
        parser.error("--h2-concurrency must look like 4x16")
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    missing = [
        s for s in args.servers if s != "rawserve" and shutil.which(s, path=str(BIN)) is None
    ]
    if missing:
        parser.error(f"not installed in {BIN}: {', '.join(missing)} (pip install -e '.[bench]')")
    if shutil.which("h2load") is None:
        parser.error("h2load not found (Debian: nghttp2-client)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(machine(), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="rawserve-bench-") as tmp:
        try:
            cells = bench(args, Path(tmp))
        except KeyboardInterrupt:
            print("interrupted; servers stopped", file=sys.stderr)
            return 130
    print(f"Machine: {machine()}\n")
    print(table(cells, args))
    if any(r.unverified for c in cells for r in c.runs):
        print(
            "\n\\* h2load 1.52 cannot read a status line without a reason phrase, which "
            "hypercorn sends on HTTP/1.1; it counts those responses as failed. The bench "
            "checked that hypercorn answers 200 with the right body before the load."
        )
    errors = errors_report(cells)
    if errors:
        print("\nErrors:\n" + errors)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "argv": sys.argv[1:],
                    "cells": [{**asdict(c), "runs": [asdict(r) for r in c.runs]} for c in cells],
                },
                indent=1,
            )
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
