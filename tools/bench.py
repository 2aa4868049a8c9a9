"""rawserve against its strongest peers, side by side, in one run (issues 13 and 14).

    .venv-bench/bin/python tools/bench.py                  # every scenario and peer; writes
                                                           # docs/BENCHMARKS.md and docs/img/
    .venv-bench/bin/python tools/bench.py --scenarios A,B --rounds 3
    python tools/bench.py --quick --servers rawserve       # CI smoke run, rawserve only

The peers live in their own virtualenv, never in rawserve's:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'

Servers (``--servers``; the FastAPI apps are tools/peers/):

- ``rawserve``: ``python -m rawserve``, its built-in app, uvloop when the
  interpreter running it has it; ``--no-cache`` except in the cache and push
  scenarios (h2load repeats one body, which the result cache would answer);
- ``uvicorn``: FastAPI written the fastest way FastAPI allows (``async def``,
  ``await request.json()``, ONNX Runtime inline, one intra-op thread) on
  uvicorn with httptools and uvloop (HTTP/1.1, HTTP/1.1+TLS);
- ``uvicorn-sync``: the same model behind FastAPI as it is commonly written
  (a ``def`` endpoint and a pydantic body, so a threadpool hop per request)
  on uvicorn (HTTP/1.1): the peer this tool used to compare with;
- ``zttp``: the fast app on uvicorn ``--http zttp --http2`` (h2c, h2+TLS);
- ``granian``: the fast app on granian, ``--http 1`` and ``--http 2`` (all
  four columns; one process per column);
- ``hypercorn``: the fast app on hypercorn (h2c, h2+TLS, and HTTP/3 with
  ``--quic-bind``).

Scenarios (``--scenarios``):

- ``A``: ``POST /predict`` on the bundled digits model (JSON in and out), in
  four columns: HTTP/1.1 (``-c 16``), HTTP/1.1+TLS, h2c (one connection, 16
  streams) and h2+TLS;
- ``B``: the memory-bound MLP (tools/make_models.py), 64 clients sending one
  item each (HTTP/1.1 ``-c 64``, h2c 4 connections x 16 streams), with
  in-process ONNX Runtime at the same batch size beside it;
- ``C``: the compute-bound CNN the same way, through the KServe V2 JSON
  endpoint (``/predict`` takes rows, not a 3x64x64 image; the FastAPI peer
  serves the same V2 request);
- ``priority``: model B over HTTP/1.1: sequential ``priority: u=0`` probes,
  unloaded and then under a ``u=7`` load from 32 connections held for the
  whole probe run; every u=7 answer must be 2xx;
- ``footprint``: start to ready, RSS of the process tree after warm-up and
  after N/2 and N requests of A;
- ``cache``: one body repeated on model B: rawserve with its result cache
  (memory, and Redis), with ``--no-cache``, and FastAPI on uvicorn with a
  Redis cache (tools/peers/fastapi_redis_app.py); redis-server is started
  here on 127.0.0.1;
- ``push``: 64 fresh rows of B as one ``POST /predict/batch`` whose results
  are pushed (HTTP/2 server push, rawserve.client) against 64 ``/predict``
  requests on one h2c connection: the time to the last result;
- ``h3``: A's request over HTTP/3, rawserve against the fast app on
  hypercorn, by tools/h3load.py (aioquic, the same client for both): one
  QUIC connection, 16 streams in flight (``h3``) and one request at a time
  (``h3-1``). A Python QUIC client saturates near 1,200-2,500 req/s on a
  core, so req/s is the client's limit; server CPU per request compares the
  servers (issue 12's target: rawserve at most half of hypercorn's). The
  HTTP/3 server runs in a process of its own (with QUIC on, its TLS answers
  would carry Alt-Svc); its TLS port answers the readiness probe;
- ``workers``: A over HTTP/1.1 (``-c 16``) and h2c (16 connections x 4
  streams: SO_REUSEPORT spreads connections, not streams, by a hash, and 4
  connections would land 3-1 or 4-0 on two workers more often than not)
  against rawserve ``--workers 1`` and ``--workers 2``, uvicorn
  ``--workers 2`` and granian
  ``--workers 2``, UNPINNED: servers and h2load get every core (taskset over
  all of them), so on a 2-core machine h2load and two workers share two
  cores. A rawserve that refuses ``--workers 2`` (before issue 17) is
  reported as refused, not failed.

docs/BENCHMARKS.md gets one generated block for A..push (between BEGIN and
END) and one block each for ``h3`` and ``workers`` (``markers``), so that
running ``--scenarios h3`` alone rewrites the HTTP/3 figures and nothing
else. Each block names its run, machine, load average and software.

Method: the servers run on ``--server-cpu`` (taskset, worker threads and
processes included), h2load on ``--client-cpu``. Each (server, column) is
warmed up, then ``--rounds`` rounds (``--a-rounds`` for A) run every cell once, in an
order rotated each round, so a shared machine's drift hits all of them alike. A run's
request count is set from its warm-up rate to last about ``--seconds``.
HTTP/2 runs are made of h2load runs of at most 4,000 requests per
connection, for every server alike (uvicorn + zttp resets a connection after
4,096 streams). The server's CPU time is utime + stime of its whole process
tree from /proc, before and after a run (tools/h3load.py reads it itself,
around its measured requests), per request answered. Tables give
medians over rounds; ratios are the median of per-round ratios against the
best peer of the column (by median rps; by CPU per request for the CPU
ratio). Every request that fails or is answered non-2xx is counted and
listed. Every server is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tools" / "peers"
BUILD_MODELS = ROOT / "build" / "models"
DIGITS = ROOT / "rawserve" / "models" / "digits.onnx"
DOC = ROOT / "docs" / "BENCHMARKS.md"
H3LOAD = ROOT / "tools" / "h3load.py"
IMG = ROOT / "docs" / "img"
BENCH_VENV = ROOT / ".venv-bench"
CERT, KEY = ROOT / "certs" / "dev-cert.pem", ROOT / "certs" / "dev-key.pem"
BEGIN = "<!-- tools/bench.py: begin (generated; edit the tool, not this) -->"
END = "<!-- tools/bench.py: end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# uvicorn + zttp resets a connection after 4,096 streams; h2load does not reconnect.
H2_REQUESTS_PER_CONNECTION = 4000

COLUMNS = {
    "h1": "HTTP/1.1",
    "h1s": "HTTP/1.1+TLS",
    "h2c": "h2c",
    "h2s": "h2+TLS",
    "h3": "HTTP/3",
    "h3-1": "HTTP/3 one at a time",
}
TCP_COLUMNS = ("h1", "h1s", "h2c", "h2s")
TLS_COLUMNS = ("h1s", "h2s")
# HTTP/3 columns: tools/h3load.py, one QUIC connection, this many streams in
# flight (None: the shape's h2_streams).
H3_STREAMS: dict[str, int | None] = {"h3": None, "h3-1": 1}
SCENARIOS = ("A", "B", "C", "priority", "footprint", "cache", "push", "h3", "workers")
# Scenarios whose section of docs/BENCHMARKS.md is a block of its own, so that
# running one alone does not rewrite the others' figures.
OWN_BLOCK = ("h3", "workers")


@dataclass(frozen=True)
class Flavor:
    name: str
    label: str
    columns: tuple[str, ...]
    one_process: bool  # one process serves all its columns (else one per column)


FLAVORS = {
    f.name: f
    for f in (
        Flavor("rawserve", "rawserve", tuple(COLUMNS), True),
        Flavor("uvicorn", "FastAPI async on uvicorn (httptools)", ("h1", "h1s"), False),
        Flavor("uvicorn-sync", "FastAPI sync+pydantic on uvicorn (httptools)", ("h1",), False),
        Flavor("zttp", "FastAPI async on uvicorn + zttp (--http2)", ("h2c", "h2s"), False),
        Flavor("granian", "FastAPI async on granian", tuple(COLUMNS), False),
        Flavor("hypercorn", "FastAPI async on hypercorn", ("h2c", "h2s", "h3", "h3-1"), True),
        # The cache scenario's rows.
        Flavor("rawserve-nocache", "rawserve --no-cache", ("h1",), True),
        Flavor("rawserve-redis", "rawserve, Redis cache", ("h1",), True),
        Flavor("fastapi-redis", "FastAPI async + Redis cache on uvicorn", ("h1",), False),
        # The workers scenario's rows: unpinned, several processes.
        Flavor("rawserve-w1", "rawserve --workers 1", ("h1", "h2c"), True),
        Flavor("rawserve-w2", "rawserve --workers 2", ("h1", "h2c"), True),
        Flavor("uvicorn-w2", "FastAPI async on uvicorn --workers 2", ("h1",), False),
        Flavor("granian-w2", "FastAPI async on granian --workers 2", ("h1", "h2c"), False),
    )
}
WORKERS = {"rawserve-w1": 1, "rawserve-w2": 2, "uvicorn-w2": 2, "granian-w2": 2}
PEER_FLAVORS = ("uvicorn", "uvicorn-sync", "zttp", "granian", "hypercorn")
PEER_BINARIES = {
    "uvicorn": "uvicorn",
    "uvicorn-sync": "uvicorn",
    "zttp": "uvicorn",
    "granian": "granian",
    "hypercorn": "hypercorn",
}
PEER_PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "httptools",
    "zttp",
    "granian",
    "hypercorn",
    "aioquic",
    "uvloop",
    "redis",
    "onnxruntime",
    "numpy",
    "matplotlib",
)
RAWSERVE_PACKAGES = (
    "h2",
    "httptools",
    "aioquic",
    "orjson",
    "onnxruntime",
    "numpy",
    "uvloop",
    "redis",
)


# -- models and bodies ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    key: str  # "digits", "mlp", "cnn"
    letter: str  # bench_engine's name: A, B, C
    path: str  # the request path
    description: str

    def file(self, python: str) -> Path:
        if self.key == "digits":
            return DIGITS
        path = BUILD_MODELS / f"{self.key}.onnx"
        if not path.is_file():
            progress_line(f"making {path} (tools/make_models.py {self.key})")
            subprocess.run(
                [python, str(ROOT / "tools" / "make_models.py"), self.key], check=True, cwd=ROOT
            )
        return path

    def body(self) -> bytes:
        """The one request body every server gets (h2load repeats it)."""
        if self.key == "digits":
            meta = json.loads((ROOT / "rawserve" / "models" / "digits.json").read_text())
            return json.dumps({"inputs": meta["samples"]["inputs"][0]}).encode()
        import numpy as np

        rng = np.random.default_rng(0)
        if self.key == "mlp":
            row = [round(float(v), 5) for v in rng.standard_normal(256)]
            return json.dumps({"inputs": row}).encode()
        data = [round(float(v), 4) for v in rng.standard_normal(3 * 64 * 64)]
        tensor = {"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": data}
        return json.dumps({"inputs": [tensor]}).encode()


MODELS = {
    "digits": ModelSpec("digits", "A", "/predict", "digits classifier, 64 values in"),
    "mlp": ModelSpec("mlp", "B", "/predict", "MLP 256-2048-2048-2048-10, memory-bound"),
    "cnn": ModelSpec("cnn", "C", "/v2/models/cnn/infer", "CNN on 3x64x64 (V2 JSON), compute-bound"),
}


def mlp_row(seed: int) -> list[float]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [round(float(v), 5) for v in rng.standard_normal(256)]


# -- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(roots: Sequence[int]) -> float:
    """utime + stime of every process in the trees of ``roots``, with the
    children they have reaped (cutime + cstime): a worker that exits
    mid-run still counts."""
    total = 0
    for root in roots:
        for pid in tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(v) for v in fields[11:15])
    return total / CLK_TCK


def rss_bytes(root: int) -> int:
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


@dataclass
class Server:
    """One server process, serving some columns of one flavor."""

    flavor: str
    columns: tuple[str, ...]
    process: subprocess.Popen[bytes]
    ports: dict[str, int]  # column -> port
    log: Path
    ready_path: str
    started: float
    ready_column: str = ""  # the column readiness is asked in (default: the first)
    ready_s: float = float("nan")

    def url(self, column: str, path: str) -> str:
        scheme = "https" if column in TLS_COLUMNS or column in H3_STREAMS else "http"
        return f"{scheme}://127.0.0.1:{self.ports[column]}{path}"

    @property
    def any_url(self) -> str:
        return self.url(self.columns[0], "")


class Launcher:
    """Builds and starts the server command lines."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rawserve_python: str = args.rawserve_python
        self.peer_bin = Path(args.peer_venv) / "bin"
        self.loop = "uvloop" if has_module(self.rawserve_python, "uvloop") else "asyncio"
        if self.loop == "asyncio" and (self.peer_bin / "python").exists():
            if has_module(str(self.peer_bin / "python"), "uvloop"):
                # The peers run on uvloop: rawserve on asyncio's own loop is
                # not its strongest form, and the ratios would say so.
                progress_line(
                    f"warning: {self.rawserve_python} has no uvloop but the peers run on it; "
                    "rawserve runs on asyncio's loop (pip install 'rawserve[uvloop]', or run "
                    "the README's command: .venv-bench/bin/python tools/bench.py)"
                )
        self.redis_url = ""
        self.findings: list[str] = []  # tracebacks and errors in the servers' logs
        self.rawserve_src = ROOT
        if args.rawserve_commit:
            # rawserve as committed, not the work tree (others may be editing it).
            self.rawserve_src = workdir / "rawserve-src"
            self.rawserve_src.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.rawserve_commit, "rawserve"],
                cwd=ROOT,
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(self.rawserve_src)], input=archive, check=True)

    def command(
        self, flavor: str, model: ModelSpec, columns: Sequence[str], ports: dict[str, int]
    ) -> tuple[list[str], str, dict[str, str]]:
        plain = next((ports[c] for c in columns if c in TCP_COLUMNS and c not in TLS_COLUMNS), None)
        # An HTTP/3 group also has a TLS port: hypercorn needs one for
        # --quic-bind, and readiness is asked there.
        tls = next((ports[c] for c in (*columns, "h1s") if c in TLS_COLUMNS and c in ports), None)
        quic = next((ports[c] for c in columns if c in H3_STREAMS), None)
        env = dict(os.environ)
        env["RAWSERVE_BENCH_MODEL"] = str(model.file(self.rawserve_python))
        env["RAWSERVE_BENCH_REDIS_URL"] = self.redis_url
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PEERS), env.get("PYTHONPATH")) if p)
        host = "127.0.0.1"
        if flavor.startswith("rawserve"):
            cmd = [self.rawserve_python, "-m", "rawserve", "--host", host]
            if self.rawserve_src != ROOT:
                env["PYTHONPATH"] = str(self.rawserve_src)
            cmd += ["--http-port", str(plain if plain is not None else -1)]
            cmd += ["--port", str(tls if tls is not None else -1)]
            cmd += ["--quic-port", str(quic if quic is not None else 0)]
            if flavor in WORKERS:
                cmd += ["--workers", str(WORKERS[flavor])]
            cmd += ["--certfile", str(CERT), "--keyfile", str(KEY)]
            cmd += ["--loop", self.loop, "--log-level", "warning", "--no-access-log"]
            if model.key != "digits":
                cmd += ["--model", f"{model.key}={model.file(self.rawserve_python)}"]
            if flavor == "rawserve-redis":
                cmd += ["--cache-url", self.redis_url]
            elif flavor == "rawserve-nocache" or not self.args.rawserve_cache:
                cmd.append("--no-cache")
            return cmd + list(self.args.rawserve_arg), "/readyz", env
        b = self.peer_bin
        module = {"uvicorn-sync": "fastapi_app:sync_app", "fastapi-redis": "fastapi_redis_app:app"}
        app = module.get(flavor, "fastapi_app:app")
        (column,) = columns if flavor != "hypercorn" else (columns[0],)
        port = ports[column]
        workers = ["--workers", str(WORKERS[flavor])] if flavor in WORKERS else []
        flavor = flavor.removesuffix("-w2")
        if flavor in ("uvicorn", "uvicorn-sync", "zttp", "fastapi-redis"):
            cmd = [str(b / "uvicorn"), "--app-dir", str(PEERS), app, "--host", host]
            cmd += ["--port", str(port), "--loop", "uvloop"]
            cmd += ["--http", "zttp", "--http2"] if flavor == "zttp" else ["--http", "httptools"]
            cmd += ["--no-access-log", "--log-level", "warning", *workers]
            if column in TLS_COLUMNS:
                cmd += ["--ssl-certfile", str(CERT), "--ssl-keyfile", str(KEY)]
            return cmd, "/healthz", env
        if flavor == "granian":
            cmd = [str(b / "granian"), "--interface", "asgi", "--host", host, "--port", str(port)]
            cmd += ["--loop", "uvloop", "--http", "1" if column.startswith("h1") else "2"]
            cmd += ["--no-access-log", "--log-level", "warning", *workers]
            if column in TLS_COLUMNS:
                cmd += ["--ssl-certificate", str(CERT), "--ssl-keyfile", str(KEY)]
            return [*cmd, app], "/healthz", env
        if flavor == "hypercorn":
            # hypercorn closes a connection after 1,000 requests by default.
            config = self.workdir / "hypercorn.toml"
            config.write_text("keep_alive_max_requests = 100000000\n")
            cmd = [str(b / "hypercorn"), "--config", str(config), "--worker-class", "uvloop"]
            # --bind is TLS when a certificate is given, --insecure-bind never;
            # without --bind hypercorn also binds its default 127.0.0.1:8000.
            if tls is None:
                cmd += ["--bind", f"{host}:{plain}"]
            else:
                cmd += ["--bind", f"{host}:{tls}", "--certfile", str(CERT), "--keyfile", str(KEY)]
                if plain is not None:
                    cmd += ["--insecure-bind", f"{host}:{plain}"]
                if quic is not None:
                    cmd += ["--quic-bind", f"{host}:{quic}"]
            return [*cmd, "--log-level", "warning", app], "/healthz", env
        raise ValueError(f"unknown server {flavor!r}")

    def start(self, flavor: str, model: ModelSpec, columns: Sequence[str]) -> Server:
        ports = {}
        plain, tls, udp = free_port(), free_port(), free_udp_port()
        for column in columns:
            ports[column] = udp if column in H3_STREAMS else tls if column in TLS_COLUMNS else plain
        ready_column = columns[0]
        if ready_column in H3_STREAMS:
            ports["h1s"] = tls
            ready_column = "h1s"
        cmd, ready_path, env = self.command(flavor, model, columns, ports)
        if self.args.server_cpu is not None:
            cmd = ["taskset", "-c", self.args.server_cpu, *cmd]
        log = self.workdir / f"{flavor}-{model.key}-{'-'.join(columns)}.log"
        # python -m puts the working directory first on sys.path.
        cwd = self.rawserve_src if flavor.startswith("rawserve") else ROOT
        with log.open("wb") as out:
            # A session of its own: killing the group also kills the workers
            # a server spawns (granian does).
            process = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return Server(
            flavor, tuple(columns), process, ports, log, ready_path, time.monotonic(), ready_column
        )

    def read_log(self, server: Server) -> None:
        """Keep what a stopped server logged as an error (a rawserve bug shows
        here before it shows in the figures)."""
        text = server.log.read_text(errors="replace")
        bad = [
            line
            for line in text.splitlines()
            if "Traceback" in line or "ERROR" in line or "Exception" in line
        ]
        if bad:
            name = f"{server.flavor} ({', '.join(server.columns)})"
            self.findings.append(f"{name}: {len(bad)} error lines, first: {bad[0][:300]}")
            tail = text[-3000:]
            progress_line(f"   {name} logged errors; its log ends:\n{tail}")


def has_module(python: str, module: str) -> bool:
    done = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
    return done.returncode == 0


INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


def http(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers=headers or {}, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=INSECURE) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def fetch(
    url: str, column: str, body: bytes | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    """One request with curl in ``column``'s protocol (granian's ``--http 2``
    speaks nothing but HTTP/2; HTTP/3 with tools/h3load.py): the status (0:
    no answer) and the body."""
    if column in H3_STREAMS:
        split = urllib.parse.urlsplit(url)
        with tempfile.NamedTemporaryFile(suffix=".json") as file:
            file.write(body or b"")
            file.flush()
            cmd = [sys.executable, str(H3LOAD), str(split.port), "--once", "--path", split.path]
            cmd += ["--body", file.name] if body is not None else []
            try:
                ran = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
                answer = json.loads(ran.stdout)
            except (subprocess.TimeoutExpired, ValueError):
                return 0, b""
        return max(0, answer["status"]), answer["body"].encode()
    if column.startswith("h1"):
        headers = {"content-type": "application/json"} if body is not None else {}
        try:
            return http(url, body, headers, timeout)
        except OSError:
            return 0, b""
    version = {"h2c": "--http2-prior-knowledge", "h2s": "--http2"}
    cmd = ["curl", "-sk", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
    cmd.append(version[column])
    if body is not None:
        cmd += ["-H", "content-type: application/json", "--data-binary", "@-"]
    done = subprocess.run([*cmd, url], input=body or b"", capture_output=True)
    data, _, status = done.stdout.rpartition(b"\n")
    return (int(status) if status.isdigit() else 0), data


def wait_ready(server: Server, timeout_s: float) -> None:
    column = server.ready_column or server.columns[0]
    url = server.url(column, server.ready_path)
    deadline = time.monotonic() + timeout_s
    # Workers share the port and each new connection reaches one of them by
    # a hash: only a run of ready answers, each on a connection of its own,
    # says that every worker is ready (16 per worker: a run of 32 misses one
    # of two workers 1 time in 4 billion).
    needed, run = 16 * WORKERS.get(server.flavor, 0) or 1, 0
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.flavor} exited with {server.process.returncode}; "
                f"log:\n{server.log.read_text()[-2000:]}"
            )
        if fetch(url, column, timeout=1)[0] == 200:
            run += 1
            if run >= needed:
                server.ready_s = time.monotonic() - server.started
                return
            continue
        run = 0
        time.sleep(0.02)
    raise RuntimeError(
        f"{server.flavor} not ready after {timeout_s}s; log:\n{server.log.read_text()[-2000:]}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    # The group may outlive its leader (a worker process): kill what is left.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


@contextlib.contextmanager
def running(
    launcher: Launcher, model: ModelSpec, wanted: Sequence[tuple[str, Sequence[str]]]
) -> Iterator[dict[tuple[str, str], Server]]:
    """Start every (flavor, columns) and yield the server of each (flavor, column)."""
    servers: list[Server] = []
    by_cell: dict[tuple[str, str], Server] = {}
    try:
        for flavor, columns in wanted:
            groups: list[tuple[str, ...]] = [(c,) for c in columns]
            if FLAVORS[flavor].one_process:
                # HTTP/3 in a process of its own: with QUIC on, TLS answers
                # carry Alt-Svc, and the CPU read is HTTP/3's alone.
                tcp = tuple(c for c in columns if c not in H3_STREAMS)
                udp = tuple(c for c in columns if c in H3_STREAMS)
                groups = [g for g in (tcp, udp) if g]
            for group in groups:
                server = launcher.start(flavor, model, group)
                servers.append(server)
                for column in group:
                    by_cell[(flavor, column)] = server
        for server in servers:
            wait_ready(server, launcher.args.ready_timeout)
        yield by_cell
    finally:
        for server in servers:
            stop(server.process)
            launcher.read_log(server)


# -- h2load ----------------------------------------------------------------------------


@dataclass
class Run:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server CPU time per request answered
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    timeout: int = 0
    non_2xx: int = 0
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.failed + self.errored + self.timeout + self.non_2xx


@dataclass(frozen=True)
class Shape:
    """How h2load loads a column: HTTP/1.1 connections, or HTTP/2 connections
    times concurrent streams."""

    h1_clients: int
    h2_clients: int
    h2_streams: int

    def text(self, column: str) -> str:
        if column.startswith("h1"):
            return f"-c {self.h1_clients}"
        if column in H3_STREAMS:
            return f"h3load -c {self.h3_streams(column)}"
        return f"-c {self.h2_clients} -m {self.h2_streams}"

    def h3_streams(self, column: str) -> int:
        return H3_STREAMS[column] or self.h2_streams


FINISHED = re.compile(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s")
REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout"
)
STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
PROTOCOL = re.compile(r"Application protocol: (\S+)")
# What h2load must have spoken in each column: a server that falls back to
# HTTP/1.1 in an HTTP/2 column is measured in the wrong column.
SPOKEN = {"h1": "http/1.1", "h1s": "http/1.1", "h2c": "h2c", "h2s": "h2"}
UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass
class H2load:
    """One h2load process's figures."""

    seconds: float
    succeeded: int
    failed: int
    errored: int
    timeout: int
    codes: list[int]  # 2xx, 3xx, 4xx, 5xx
    latencies_ms: list[float]
    note: str = ""
    protocol: str = ""  # as h2load negotiated it (ALPN, or h2c by prior knowledge)


def h2load_cmd(
    url: str,
    column: str,
    shape: Shape,
    body: Path | None,
    cpu: str | None,
    log: Path,
    *,
    requests: int | None = None,
    duration_ms: int | None = None,
    clients: int | None = None,
    headers: Sequence[str] = (),
) -> list[str]:
    cmd = ["h2load", f"--log-file={log}"]
    cmd += ["-n", str(requests)] if requests is not None else ["-D", f"{duration_ms}ms"]
    if column.startswith("h1"):
        cmd += ["--h1", "-c", str(clients or shape.h1_clients), "-m", "1"]
    else:
        cmd += ["-c", str(clients or shape.h2_clients), "-m", str(shape.h2_streams)]
    if body is not None:
        cmd += ["-d", str(body), "-H", "content-type: application/json"]
    for header in headers:
        cmd += ["-H", header]
    cmd.append(url)
    return ["taskset", "-c", cpu, *cmd] if cpu is not None else cmd


def parse_h2load(out: str, log: Path, expected: int | None) -> H2load:
    finished, counts, status = FINISHED.search(out), REQUESTS.search(out), STATUS.search(out)
    if finished is None or counts is None or status is None:
        return H2load(0.0, 0, expected or 1, 0, 0, [0, 0, 0, 0], [], f"h2load: {out[-300:]}")
    seconds = float(finished.group(1)) * UNITS_S[finished.group(2)]
    _, _, _, succeeded, failed, errored, timed_out = (int(v) for v in counts.groups())
    latencies = []
    if log.exists():
        latencies = [
            int(line.split("\t")[2]) / 1000
            for line in log.read_text().splitlines()
            if line.count("\t") >= 2
        ]
    codes = [int(v) for v in status.groups()]
    protocol = PROTOCOL.search(out)
    return H2load(
        seconds,
        succeeded,
        failed,
        errored,
        timed_out,
        codes,
        latencies,
        protocol=protocol.group(1) if protocol else "",
    )


def run_h2load(cmd: list[str], log: Path, expected: int | None, timeout_s: float) -> H2load:
    log.unlink(missing_ok=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return H2load(0.0, 0, expected or 1, 0, 0, [0, 0, 0, 0], [], f"timed out ({timeout_s}s)")
    return parse_h2load(done.stdout + done.stderr, log, expected)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def load(
    url: str,
    column: str,
    shape: Shape,
    body: Path | None,
    requests: int,
    *,
    cpu: str | None,
    cpu_pids: Sequence[int],
    workdir: Path,
    timeout_s: float,
) -> Run:
    """``requests`` requests, HTTP/2 ones in h2load runs of at most
    H2_REQUESTS_PER_CONNECTION per connection, HTTP/3 ones by tools/h3load.py;
    the server's CPU per request."""
    if column in H3_STREAMS:
        return load_h3(url, shape.h3_streams(column), body, requests, cpu, cpu_pids, timeout_s)
    per_run = requests
    if not column.startswith("h1"):
        per_run = H2_REQUESTS_PER_CONNECTION * shape.h2_clients
    log = workdir / "h2load.log"
    parts: list[H2load] = []
    cpu0 = cpu_seconds(cpu_pids)
    left = requests
    while left > 0:
        n = min(left, per_run)
        cmd = h2load_cmd(url, column, shape, body, cpu, log, requests=n)
        part = run_h2load(cmd, log, n, timeout_s)
        if part.protocol and part.protocol != SPOKEN[column]:
            part.failed, part.note = n, f"spoke {part.protocol}, not {SPOKEN[column]}"
        parts.append(part)
        left -= n
    cpu1 = cpu_seconds(cpu_pids)
    seconds = sum(p.seconds for p in parts)
    succeeded = sum(p.succeeded for p in parts)
    answered = sum(sum(p.codes) for p in parts)
    latencies = [v for p in parts for v in p.latencies_ms]
    return Run(
        requests=requests,
        rps=answered / seconds if seconds else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        cpu_us=(cpu1 - cpu0) / answered * 1e6 if answered else float("nan"),
        succeeded=succeeded,
        failed=sum(p.failed for p in parts),
        errored=sum(p.errored for p in parts),
        timeout=sum(p.timeout for p in parts),
        non_2xx=sum(sum(p.codes[1:]) for p in parts),
        note="; ".join(p.note for p in parts if p.note),
    )


def load_h3(
    url: str,
    streams: int,
    body: Path | None,
    requests: int,
    cpu: str | None,
    cpu_pids: Sequence[int],
    timeout_s: float,
) -> Run:
    """``requests`` requests on one QUIC connection, ``streams`` in flight, by
    tools/h3load.py pinned on ``cpu``. It reads the server's CPU itself,
    around the measured requests only (after its handshake and 20 warm-up
    requests that are not counted), from the same /proc fields as
    cpu_seconds."""
    split = urllib.parse.urlsplit(url)
    cmd = [sys.executable, str(H3LOAD), str(split.port), "--path", split.path, "--json"]
    cmd += ["-n", str(requests), "-c", str(streams), "--warm-up", "20"]
    cmd += ["--deadline", str(timeout_s)]
    cmd += ["--body", str(body)] if body is not None else []
    for pid in cpu_pids:
        cmd += ["--pid", str(pid)]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 30)
        got = json.loads(done.stdout)
    except (subprocess.TimeoutExpired, ValueError):
        return Run(requests, 0.0, math.nan, math.nan, math.nan, failed=requests, note="h3load")
    return Run(
        requests=requests,
        rps=got["rps"],
        p50_ms=got["p50_ms"] if got["p50_ms"] is not None else math.nan,
        p99_ms=got["p99_ms"] if got["p99_ms"] is not None else math.nan,
        cpu_us=got["cpu_us"] if got["cpu_us"] is not None else math.nan,
        succeeded=got["answered"] - got["non_2xx"],
        failed=got["failed"],
        non_2xx=got["non_2xx"],
        note=got["note"],
    )


# -- metrics scraped from rawserve and Redis ------------------------------------------


def prom_values(text: str, name: str) -> dict[str, float]:
    """``name``'s samples by their label text, from a Prometheus exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key[len(name) :]] = float(value)
    return out


def rawserve_counters(server: Server) -> dict[str, float]:
    """Items run by the model, and cache lookups by outcome."""
    _, text = http(server.url(server.ready_column or server.columns[0], "/metrics"))
    metrics = text.decode()
    items = sum(prom_values(metrics, "rawserve_batch_size_sum").values())
    batches = sum(prom_values(metrics, "rawserve_batch_size_count").values())
    lookups = prom_values(metrics, "rawserve_cache_lookups_total")
    hits = sum(v for k, v in lookups.items() if 'outcome="hit"' in k)
    return {"items": items, "batches": batches, "hits": hits, "lookups": sum(lookups.values())}


def redis_info(port: int) -> dict[str, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO stats\r\n")
        data = b""
        while b"keyspace_misses" not in data or not data.endswith(b"\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.count(b"\r\n") > 5 and b"keyspace_misses" in data and b"\r\n\r\n" in data:
                break
    out = {}
    for line in data.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key in ("keyspace_hits", "keyspace_misses"):
            out[key] = float(value)
    return out


# -- progress ---------------------------------------------------------------------------


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


def progress_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the cells of a comparison ------------------------------------------------------------


@dataclass
class Cell:
    scenario: str
    flavor: str
    column: str
    shape: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        values = [getattr(r, attr) for r in self.runs]
        values = [v for v in values if not math.isnan(v)]
        return float(statistics.median(values)) if values else float("nan")

    def extra(self, key: str) -> float:
        values = [r.extra[key] for r in self.runs if key in r.extra]
        return float(statistics.median(values)) if values else float("nan")

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


class Bench:
    """One run of every selected scenario; its results go to ``self.report``."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.launcher = Launcher(args, workdir)
        self.report: dict[str, Any] = {"scenarios": {}}
        self.curves: dict[str, dict[int, float]] = {}

    # -- plumbing --------------------------------------------------------------------

    def flavors(self, candidates: Sequence[str]) -> list[str]:
        return [f for f in candidates if f in self.args.servers]

    def body_file(self, model: ModelSpec, name: str = "") -> Path:
        path = self.workdir / f"body-{name or model.key}.json"
        path.write_bytes(model.body())
        return path

    def requests_for(self, warm: Run, floor: int) -> int:
        if self.args.quick:
            return floor
        target = warm.rps * self.args.seconds
        return int(min(max(target, floor), 200_000) // 100 * 100) or floor

    def check_answers(
        self, servers: dict[tuple[str, str], Server], model: ModelSpec, body: bytes
    ) -> None:
        """Every server answers the same body with the same answer, or the
        comparison would be between different work."""
        answers: dict[str, Any] = {}
        for (flavor, column), server in servers.items():
            status, data = fetch(server.url(column, model.path), column, body)
            if status != 200:
                raise RuntimeError(f"{flavor} {column} answered {status}: {data[:300]!r}")
            answers[f"{flavor} {column}"] = json.loads(data)
        first_name, first = next(iter(answers.items()))
        for name, answer in answers.items():
            if not same_answer(first, answer):
                raise RuntimeError(f"{model.key}: {name} answered {answer}, {first_name} {first}")
        shown = {k: v for k, v in first.items() if k != "outputs"}
        progress_line(f"   {model.key}: every server answers alike ({shown or 'V2 outputs'})")

    def compare(
        self,
        scenario: str,
        model: ModelSpec,
        wanted: Sequence[tuple[str, Sequence[str]]],
        shape: Shape,
        *,
        warm_requests: int,
        floor: int,
        extra_pids: Sequence[int] = (),
        on_redis: int | None = None,
        rounds: int | None = None,
    ) -> list[Cell]:
        """Warm up every (flavor, column), then interleaved rounds
        (``rounds``, default ``--rounds``)."""
        body = self.body_file(model, scenario)
        with running(self.launcher, model, wanted) as servers:
            self.check_answers(servers, model, body.read_bytes())
            cells = [
                Cell(scenario, flavor, column, shape.text(column))
                for flavor, columns in wanted
                for column in columns
            ]
            sizes: dict[tuple[str, str], int] = {}
            rounds = rounds or self.args.rounds
            progress = Progress(scenario, len(cells) * (1 + rounds))

            def one(cell: Cell, n: int) -> Run:
                server = servers[(cell.flavor, cell.column)]
                pids = [server.process.pid, *extra_pids]
                # Several workers would each answer /metrics for themselves.
                rawserve = cell.flavor.startswith("rawserve") and cell.flavor not in WORKERS
                before = rawserve_counters(server) if rawserve else {}
                redis0 = redis_info(on_redis) if on_redis and "redis" in cell.flavor else {}
                run = load(
                    server.url(cell.column, model.path),
                    cell.column,
                    shape,
                    body,
                    n,
                    cpu=self.args.client_cpu,
                    cpu_pids=pids,
                    workdir=self.workdir,
                    timeout_s=self.args.timeout,
                )
                if rawserve:
                    after = rawserve_counters(server)
                    items = after["items"] - before["items"]
                    batches = after["batches"] - before["batches"]
                    run.extra["mean_batch"] = items / batches if batches else 0.0
                    answered = run.succeeded or 1
                    run.extra["answered_without_model"] = max(0.0, 1 - items / answered)
                    lookups = after["lookups"] - before["lookups"]
                    if lookups:
                        run.extra["hit_rate"] = (after["hits"] - before["hits"]) / lookups
                if redis0:
                    redis1 = redis_info(on_redis or 0)
                    hits = redis1["keyspace_hits"] - redis0["keyspace_hits"]
                    misses = redis1["keyspace_misses"] - redis0["keyspace_misses"]
                    run.extra["hit_rate"] = hits / (hits + misses) if hits + misses else 0.0
                return run

            for cell in cells:
                progress.start(f"warm-up {cell.flavor} {cell.column}")
                warm = one(cell, warm_requests)
                sizes[(cell.flavor, cell.column)] = self.requests_for(warm, floor)
                progress.step(
                    f"   warm-up {cell.flavor} {cell.column}: {warm.errors} errors {warm.note}"
                    if warm.errors
                    else None
                )
            for round_ in range(rounds):
                shift = round_ % len(cells)
                for cell in cells[shift:] + cells[:shift]:
                    progress.start(f"round {round_ + 1} {cell.flavor} {cell.column}")
                    run = one(cell, sizes[(cell.flavor, cell.column)])
                    cell.runs.append(run)
                    extra = "".join(f"  {k} {v:.2f}" for k, v in run.extra.items())
                    progress.step(
                        f"   {scenario} round {round_ + 1} {cell.flavor:16} {cell.column:3} "
                        f"{run.rps:9,.0f} req/s  p50 {run.p50_ms:7.2f}  p99 {run.p99_ms:7.2f} ms"
                        f"  cpu {run.cpu_us:6.0f} us/req  errors {run.errors}{extra} {run.note}"
                    )
            progress.close()
        return cells

    def curve(self, letter: str) -> dict[int, float]:
        """In-process ONNX Runtime items/s by batch size, on the server's CPU."""
        if letter not in self.curves:
            cmd = [self.launcher.rawserve_python, str(ROOT / "tools" / "bench_engine.py")]
            cmd += ["--curve-json", "--models", letter, "--min-time", str(self.args.curve_time)]
            if self.args.server_cpu is not None:
                cmd = ["taskset", "-c", self.args.server_cpu, *cmd]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            raw = json.loads(out.stdout)[letter]
            self.curves[letter] = {int(k): float(v) for k, v in raw.items()}
            progress_line(
                f"   in-process {letter}: "
                + ", ".join(f"b{k} {v:,.0f}/s" for k, v in self.curves[letter].items())
            )
        return self.curves[letter]

    # -- scenarios -----------------------------------------------------------------------

    def scenario_a(self) -> None:
        progress_line("== A: digits, POST /predict, JSON in and out, four columns")
        wanted = []
        for flavor in self.flavors(("rawserve", *PEER_FLAVORS)):
            columns = [
                c for c in FLAVORS[flavor].columns if c in self.args.columns and c in TCP_COLUMNS
            ]
            if columns:
                wanted.append((flavor, columns))
        shape = Shape(16, 1, 16)
        warm = 100 if self.args.quick else 1000
        floor = 200 if self.args.quick else 2000
        cells = self.compare(
            "A",
            MODELS["digits"],
            wanted,
            shape,
            warm_requests=warm,
            floor=floor,
            rounds=self.args.a_rounds,
        )
        self.report["scenarios"]["A"] = summarize(cells, list(TCP_COLUMNS))

    def scenario_h3(self) -> None:
        """A's request over HTTP/3: one QUIC connection, 16 streams in flight
        and one at a time, rawserve and FastAPI on hypercorn (--quic-bind),
        both driven by tools/h3load.py."""
        progress_line("== h3: digits, POST /predict over HTTP/3, 16 streams and one at a time")
        wanted = []
        for flavor in self.flavors(("rawserve", "hypercorn")):
            columns = [c for c in H3_STREAMS if c in self.args.columns]
            if columns:
                wanted.append((flavor, columns))
        # Requests per run from the warm-up rate, as for h2load; the floor
        # keeps a p99 from resting on a handful of requests.
        warm, floor = (16, 100) if self.args.quick else (300, 1000)
        cells = self.compare(
            "h3", MODELS["digits"], wanted, Shape(16, 1, 16), warm_requests=warm, floor=floor
        )
        self.report["scenarios"]["h3"] = summarize(cells, list(H3_STREAMS))

    def scenario_workers(self) -> None:
        """A over HTTP/1.1 and h2c against N server processes, unpinned: on a
        2-core machine the workers and h2load share both cores."""
        progress_line("== workers: digits over HTTP/1.1 and h2c, --workers 1 and 2, unpinned")
        candidates = []
        if "rawserve" in self.args.servers:
            candidates += ["rawserve-w1", "rawserve-w2"]
        candidates += [f"{p}-w2" for p in ("uvicorn", "granian") if p in self.args.servers]
        model = MODELS["digits"]
        every_cpu = ",".join(str(c) for c in range(os.cpu_count() or 1))
        pinned = self.args.server_cpu, self.args.client_cpu
        refused: dict[str, str] = {}
        wanted = []
        try:
            if pinned != (None, None):
                # taskset over every core: this process may itself be pinned,
                # and its children would inherit that.
                self.args.server_cpu = self.args.client_cpu = every_cpu
            for flavor in candidates:
                why = self.refusal(flavor, model) if flavor.startswith("rawserve") else ""
                if why:
                    refused[flavor] = why
                    progress_line(f"   {flavor} refused to start: {why}")
                    continue
                columns = [c for c in FLAVORS[flavor].columns if c in ("h1", "h2c")]
                wanted.append((flavor, columns))
            # h2c from 16 connections: SO_REUSEPORT hashes connections, not
            # streams, to workers: one connection would reach one worker, and
            # 4 would split 3-1 or 4-0 on two workers 5 times in 8.
            shape = Shape(16, 16, 4)
            warm, floor = (50, 100) if self.args.quick else (1000, 2000)
            cells = []
            if wanted:
                cells = self.compare(
                    "workers", model, wanted, shape, warm_requests=warm, floor=floor
                )
        finally:
            self.args.server_cpu, self.args.client_cpu = pinned
        result = summarize(cells, ["h1", "h2c"], baseline="rawserve-w2")
        result["refused"] = refused
        result["cpus"] = os.cpu_count()
        result["scaling"] = {}
        for column in ("h1", "h2c"):
            one = next((c for c in cells if c.flavor == "rawserve-w1" and c.column == column), None)
            two = next((c for c in cells if c.flavor == "rawserve-w2" and c.column == column), None)
            if one is not None and two is not None:
                ratios = [b.rps / a.rps for a, b in zip(one.runs, two.runs, strict=False) if a.rps]
                if ratios:
                    result["scaling"][column] = {
                        "ratio": statistics.median(ratios),
                        "range": [min(ratios), max(ratios)],
                    }
        self.report["scenarios"]["workers"] = result

    def refusal(self, flavor: str, model: ModelSpec) -> str:
        """Why ``flavor`` does not start (rawserve refused ``--workers 2``
        before issue 17 landed it), or "" when it serves."""
        try:
            with running(self.launcher, model, [(flavor, ["h1"])]):
                return ""
        except RuntimeError as exc:
            lines = [line for line in str(exc).splitlines()[1:] if line.strip()]
            return lines[-1][:300] if lines else str(exc)[:300]

    def scenario_batching(self, scenario: str, model: ModelSpec) -> None:
        progress_line(f"== {scenario}: {model.description}, 64 clients with one item each")
        peers: tuple[str, ...] = ("uvicorn", "uvicorn-sync", "zttp", "granian", "hypercorn")
        if scenario == "C":
            peers = tuple(p for p in peers if p != "uvicorn-sync")  # it has no V2 route
        wanted = []
        for flavor in self.flavors(("rawserve", *peers)):
            columns = [c for c in FLAVORS[flavor].columns if c in ("h1", "h2c")]
            if columns:
                wanted.append((flavor, columns))
        curve = self.curve(model.letter)
        shape = Shape(64, 4, 16)
        # 64 clients: h2load refuses fewer requests than clients.
        warm, floor = (64, 64) if self.args.quick else (300, 1000)
        cells = self.compare(scenario, model, wanted, shape, warm_requests=warm, floor=floor)
        result = summarize(cells, ["h1", "h2c"])
        result["in_process"] = {str(k): v for k, v in curve.items()}
        for cell in result["cells"]:
            batch = cell["mean_batch"] if cell["flavor"].startswith("rawserve") else 1.0
            reference = interpolate(curve, batch) if batch == batch and batch > 0 else float("nan")
            cell["in_process_at_batch"] = reference
            cell["fraction_of_in_process"] = cell["rps"] / reference if reference else float("nan")
            cell["batch"] = batch
        self.report["scenarios"][scenario] = result

    def scenario_priority(self) -> None:
        progress_line("== priority: model B over HTTP/1.1, u=0 probes under a u=7 load")
        model = MODELS["mlp"]
        body = self.body_file(model, "priority")
        flavors = self.flavors(("rawserve", "uvicorn", "granian"))
        curve = self.curve("B")
        batch64_ms = 64 / curve[64] * 1000 if 64 in curve else float("nan")
        probe_ms = int(self.args.probe_seconds * 1000)
        rounds: dict[str, list[dict[str, Any]]] = {f: [] for f in flavors}
        with running(self.launcher, model, [(f, ["h1"]) for f in flavors]) as servers:
            self.check_answers(servers, model, body.read_bytes())
            progress = Progress("priority", len(flavors) * self.args.rounds)
            for round_ in range(self.args.rounds):
                for flavor in flavors:
                    progress.start(f"round {round_ + 1} {flavor}")
                    got = self.priority_round(servers[(flavor, "h1")], body, probe_ms)
                    rounds[flavor].append(got)
                    progress.step(
                        f"   priority round {round_ + 1} {flavor:9} unloaded p50 "
                        f"{percentile(got['unloaded'], 50):.2f} p99 "
                        f"{percentile(got['unloaded'], 99):.2f}  loaded p50 "
                        f"{percentile(got['loaded'], 50):.2f} p99 "
                        f"{percentile(got['loaded'], 99):.2f} ms ({len(got['loaded'])} probes)  "
                        f"u=7 load {got['load_rps']:,.0f} req/s, {got['load_non_2xx']} non-2xx, "
                        f"{got['load_failed']} failed"
                    )
            progress.close()
        result: dict[str, Any] = {"batch64_ms": batch64_ms, "probe_ms": probe_ms, "rows": []}
        for flavor in flavors:
            runs = rounds[flavor]
            # Percentiles over the probes of every round together: a round
            # has too few of the slow peers' probes for a p99 of its own.
            unloaded = [v for r in runs for v in r["unloaded"]]
            loaded = [v for r in runs for v in r["loaded"]]
            row: dict[str, Any] = {
                "flavor": flavor,
                "label": FLAVORS[flavor].label,
                "unloaded_p50_ms": percentile(unloaded, 50),
                "unloaded_p99_ms": percentile(unloaded, 99),
                "unloaded_probes": len(unloaded),
                "loaded_p50_ms": percentile(loaded, 50),
                "loaded_p99_ms": percentile(loaded, 99),
                "loaded_probes": len(loaded),
                "loaded_p99_by_round_ms": [percentile(r["loaded"], 99) for r in runs],
                "probe_errors": sum(r["probe_errors"] for r in runs),
                "load_rps": statistics.median(r["load_rps"] for r in runs),
                "load_answered": sum(r["load_answered"] for r in runs),
                "load_non_2xx": sum(r["load_non_2xx"] for r in runs),
                "load_failed": sum(r["load_failed"] for r in runs),
            }
            row["limit_ms"] = row["unloaded_p99_ms"] + batch64_ms
            row["met"] = bool(
                row["loaded_p99_ms"] <= row["limit_ms"]
                and row["load_non_2xx"] == 0
                and row["load_failed"] == 0
            )
            result["rows"].append(row)
        self.report["scenarios"]["priority"] = result

    def priority_round(self, server: Server, body: Path, probe_ms: int) -> dict[str, Any]:
        url = server.url("h1", "/predict")
        cpu = self.args.client_cpu
        shape = Shape(32, 1, 1)
        probe_log, load_log = self.workdir / "probe.log", self.workdir / "load.log"

        def probes(duration_ms: int) -> H2load:
            cmd = h2load_cmd(
                url, "h1", shape, body, cpu, probe_log, duration_ms=duration_ms, clients=1,
                headers=["priority: u=0"],
            )  # fmt: skip
            return run_h2load(cmd, probe_log, None, duration_ms / 1000 + 60)

        unloaded = probes(max(500, probe_ms // 2))
        # The load starts first and ends after the probes: it is held for the
        # whole probe run. h2load -D does not count the requests in flight
        # when its duration ends (the client drops them; the server refused
        # nothing).
        lead_ms = 100 if self.args.quick else 1000
        cmd = h2load_cmd(
            url, "h1", shape, body, cpu, load_log, duration_ms=probe_ms + 2 * lead_ms,
            headers=["priority: u=7"],
        )  # fmt: skip
        load_log.unlink(missing_ok=True)
        loader = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(lead_ms / 1000)
            loaded = probes(probe_ms)
            out, _ = loader.communicate(timeout=probe_ms / 1000 + 120)
        finally:
            if loader.poll() is None:
                loader.kill()
                loader.wait()
        background = parse_h2load(out, load_log, None)
        answered = sum(background.codes)
        return {
            "unloaded": unloaded.latencies_ms,
            "loaded": loaded.latencies_ms,
            "probe_errors": unloaded.failed + loaded.failed + sum(loaded.codes[1:]),
            "load_rps": answered / background.seconds if background.seconds else 0.0,
            "load_answered": answered,
            "load_non_2xx": sum(background.codes[1:]),
            "load_failed": background.failed + background.errored + background.timeout,
        }

    def scenario_footprint(self) -> None:
        progress_line("== footprint: start to ready, RSS after warm-up, N/2 and N requests")
        model = MODELS["digits"]
        body = self.body_file(model, "footprint")
        n = self.args.footprint_requests
        rows = []
        for flavor in self.flavors(("rawserve", "uvicorn")):
            with running(self.launcher, model, [(flavor, ["h1"])]) as servers:
                server = servers[(flavor, "h1")]
                url = server.url("h1", model.path)
                pid = server.process.pid
                row: dict[str, Any] = {"flavor": flavor, "label": FLAVORS[flavor].label}
                row["ready_s"] = server.ready_s
                row["rss_ready"] = rss_bytes(pid)
                kwargs = dict(
                    cpu=self.args.client_cpu, cpu_pids=[pid], workdir=self.workdir,
                    timeout_s=self.args.timeout,
                )  # fmt: skip
                shape = Shape(16, 1, 16)
                warm = load(url, "h1", shape, body, min(1000, n // 2), **kwargs)  # type: ignore[arg-type]
                row["rss_warm"] = rss_bytes(pid)
                half = load(url, "h1", shape, body, n // 2, **kwargs)  # type: ignore[arg-type]
                row["rss_half"] = rss_bytes(pid)
                rest = load(url, "h1", shape, body, n - n // 2, **kwargs)  # type: ignore[arg-type]
                row["rss_full"] = rss_bytes(pid)
                row["requests"] = n
                row["errors"] = warm.errors + half.errors + rest.errors
                row["growth"] = row["rss_full"] / row["rss_half"] - 1
                rows.append(row)
                progress_line(
                    f"   footprint {flavor:9} ready {row['ready_s']:.2f} s  RSS warm "
                    f"{row['rss_warm'] / 2**20:.1f} MiB, at {n // 2:,} "
                    f"{row['rss_half'] / 2**20:.1f}"
                    f", at {n:,} {row['rss_full'] / 2**20:.1f} MiB ({row['growth']:+.1%})"
                )
        self.report["scenarios"]["footprint"] = {"requests": n, "rows": rows}

    @contextlib.contextmanager
    def redis(self) -> Iterator[tuple[int, int] | None]:
        """redis-server on 127.0.0.1 and the server CPU, for this run only."""
        binary = shutil.which("redis-server")
        if binary is None:
            progress_line("   redis-server not found: the Redis rows are left out")
            yield None
            return
        port = free_port()
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        cmd += ["no", "--daemonize", "no", "--dir", str(self.workdir)]
        if self.args.server_cpu is not None:
            cmd = ["taskset", "-c", self.args.server_cpu, *cmd]
        log = (self.workdir / "redis.log").open("wb")
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError):
                    redis_info(port)
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            self.launcher.redis_url = f"redis://127.0.0.1:{port}/0"
            yield port, process.pid
        finally:
            stop(process)
            log.close()

    def scenario_cache(self) -> None:
        progress_line("== cache: one body repeated on model B (HTTP/1.1 -c 16)")
        model = MODELS["mlp"]
        with self.redis() as redis:
            candidates = []
            if "rawserve" in self.args.servers:
                candidates = ["rawserve", "rawserve-redis", "rawserve-nocache"]
            if "uvicorn" in self.args.servers:
                candidates.append("fastapi-redis")
            if redis is None:
                candidates = [c for c in candidates if "redis" not in c]
            wanted = [(f, ["h1"]) for f in candidates]
            redis_port, redis_pid = redis if redis is not None else (None, None)
            # The cache rows run with the cache on; --no-cache is a row of its own.
            self.args.rawserve_cache = True
            try:
                cells = self.compare(
                    "cache",
                    model,
                    wanted,
                    Shape(16, 1, 16),
                    warm_requests=32 if self.args.quick else 500,
                    floor=64 if self.args.quick else 2000,
                    extra_pids=[redis_pid] if redis_pid else [],
                    on_redis=redis_port,
                )
            finally:
                self.args.rawserve_cache = False
        result = summarize(cells, ["h1"])
        result["note"] = (
            "CPU per request of the Redis rows includes redis-server's"
            if any("redis" in f for f, _ in wanted)
            else ""
        )
        self.report["scenarios"]["cache"] = result

    def scenario_push(self) -> None:
        progress_line("== push: 64 rows of B, POST /predict/batch with push vs 64 requests (h2c)")
        if "rawserve" not in self.args.servers:
            return
        model = MODELS["mlp"]
        self.args.rawserve_cache = True
        try:
            with running(self.launcher, model, [("rawserve", ["h2c"])]) as servers:
                server = servers[("rawserve", "h2c")]
                result = asyncio.run(self.push_runs(server.url("h2c", "")))
        finally:
            self.args.rawserve_cache = False
        self.report["scenarios"]["push"] = result

    async def push_runs(self, base: str) -> dict[str, Any]:
        sys.path.insert(0, str(ROOT))
        import orjson

        from rawserve.client import connect

        reps = self.args.push_reps
        times: dict[str, list[float]] = {"push": [], "separate": []}
        errors = 0
        progress = Progress("push", 2 * reps)
        for rep in range(reps + 1):  # the first repetition warms up
            rows = [mlp_row(10_000 + 64 * rep + i) for i in range(64)]
            order = ["push", "separate"] if rep % 2 == 0 else ["separate", "push"]
            for method in order:
                # Fresh rows for each method too: nothing may come from the cache.
                fresh = [[v + (1e-5 if method == "push" else 0.0) for v in r] for r in rows]
                async with connect(base) as client:
                    await client.request("GET", "/healthz")
                    started = time.perf_counter()
                    if method == "push":
                        body = orjson.dumps({"items": fresh})
                        head = await client.request(
                            "POST",
                            "/predict/batch",
                            body=body,
                            headers={"content-type": "application/json"},
                        )
                        pushed = await client.wait_pushes()
                        elapsed = time.perf_counter() - started
                        paths = head.json()["results"] if head.status == 202 else []
                        ok = [p for p in paths if p in pushed and pushed[p].status == 200]
                        errors += 64 - len(ok)
                    else:
                        answers = await asyncio.gather(
                            *(
                                client.request(
                                    "POST",
                                    "/predict",
                                    body=orjson.dumps({"inputs": row}),
                                    headers={"content-type": "application/json"},
                                )
                                for row in fresh
                            )
                        )
                        elapsed = time.perf_counter() - started
                        errors += sum(1 for a in answers if a.status != 200)
                if rep:
                    times[method].append(elapsed * 1000)
                    progress.step(f"   push rep {rep} {method:8} {elapsed * 1000:7.1f} ms")
        progress.close()
        return {
            "reps": reps,
            "errors": errors,
            "rows": [
                {
                    "method": method,
                    "median_ms": statistics.median(values),
                    "min_ms": min(values),
                    "max_ms": max(values),
                }
                for method, values in times.items()
                if values
            ],
        }

    def run(self) -> None:
        for scenario in self.args.scenarios:
            started = time.monotonic()
            if scenario == "A":
                self.scenario_a()
            elif scenario in ("B", "C"):
                self.scenario_batching(scenario, MODELS["mlp" if scenario == "B" else "cnn"])
            elif scenario == "priority":
                self.scenario_priority()
            elif scenario == "footprint":
                self.scenario_footprint()
            elif scenario == "cache":
                self.scenario_cache()
            elif scenario == "push":
                self.scenario_push()
            elif scenario == "h3":
                self.scenario_h3()
            elif scenario == "workers":
                self.scenario_workers()
            if scenario in self.report["scenarios"]:
                # The machine is shared: how busy it was, beside the figures.
                self.report["scenarios"][scenario]["load"] = os.getloadavg()
            progress_line(f"   {scenario} took {time.monotonic() - started:.0f} s")


def same_answer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if "outputs" in a:
        xs = [v for o in a["outputs"] for v in o["data"]]
        ys = [v for o in b.get("outputs", []) for v in o["data"]]
        return len(xs) == len(ys) and all(
            abs(x - y) <= 1e-4 + 1e-3 * abs(x) for x, y in zip(xs, ys, strict=True)
        )
    return (
        a.get("prediction") == b.get("prediction")
        and a.get("model") == b.get("model")
        and abs(float(a.get("confidence", 0)) - float(b.get("confidence", 0))) <= 1e-4
    )


def interpolate(curve: dict[int, float], batch: float) -> float:
    """In-process items/s at a fractional batch size (bench_engine's rule: the
    time of one run is interpolated linearly between measured sizes)."""
    sizes = sorted(curve)
    if batch <= sizes[0]:
        return curve[sizes[0]]
    if batch >= sizes[-1]:
        return curve[sizes[-1]]
    for low, high in itertools.pairwise(sizes):
        if low <= batch <= high:
            t_low, t_high = low / curve[low], high / curve[high]
            return batch / (t_low + (t_high - t_low) * (batch - low) / (high - low))
    raise AssertionError("unreachable")


def summarize(cells: Sequence[Cell], columns: Sequence[str], baseline: str = "") -> dict[str, Any]:
    """Medians per cell; per column, rawserve against the best peer: the
    median of per-round ratios of rps and of CPU per request."""
    out: dict[str, Any] = {"cells": [], "columns": {}}
    for cell in cells:
        out["cells"].append(
            {
                "flavor": cell.flavor,
                "label": FLAVORS[cell.flavor].label,
                "column": cell.column,
                "shape": cell.shape,
                "requests": cell.runs[0].requests if cell.runs else 0,
                "rps": cell.median("rps"),
                "p50_ms": cell.median("p50_ms"),
                "p99_ms": cell.median("p99_ms"),
                "cpu_us": cell.median("cpu_us"),
                "errors": cell.errors,
                "mean_batch": cell.extra("mean_batch"),
                "hit_rate": cell.extra("hit_rate"),
                "answered_without_model": cell.extra("answered_without_model"),
                "runs": [asdict(r) for r in cell.runs],
            }
        )
    ours = baseline or "rawserve"
    for column in columns:
        here = [c for c in cells if c.column == column and c.runs]
        mine = next((c for c in here if c.flavor == ours), None)
        peers = [c for c in here if not c.flavor.startswith("rawserve")]
        if mine is None or not peers:
            continue
        best = max(peers, key=lambda c: c.median("rps"))
        leanest = min(peers, key=lambda c: c.median("cpu_us"))
        rps_ratios = [a.rps / b.rps for a, b in zip(mine.runs, best.runs, strict=False) if b.rps]
        cpu_ratios = [
            b.cpu_us / a.cpu_us for a, b in zip(mine.runs, leanest.runs, strict=False) if a.cpu_us
        ]
        out["columns"][column] = {
            "best_peer": best.flavor,
            "leanest_peer": leanest.flavor,
            "rps_ratio": statistics.median(rps_ratios) if rps_ratios else float("nan"),
            "rps_ratio_range": [min(rps_ratios), max(rps_ratios)] if rps_ratios else [],
            "cpu_ratio": statistics.median(cpu_ratios) if cpu_ratios else float("nan"),
            "cpu_ratio_range": [min(cpu_ratios), max(cpu_ratios)] if cpu_ratios else [],
            "p99_ms": mine.median("p99_ms"),
            "best_peer_p99_ms": best.median("p99_ms"),
        }
    return out


# -- the report --------------------------------------------------------------------------


def versions(python: str, packages: Sequence[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([python, "-c", code, *packages], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def machine(args: argparse.Namespace, launcher: Launcher) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    h2load_version = subprocess.run(
        ["h2load", "--version"], capture_output=True, text=True
    ).stdout.strip()
    rev = args.rawserve_commit or "HEAD"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = []
    if not args.rawserve_commit:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "rawserve"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout
        dirty = [line[3:] for line in status.splitlines()]
    peer_python = launcher.peer_bin / "python"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python tools/bench.py " + " ".join(args.argv),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "h2load": h2load_version,
        "commit": commit,
        "rawserve_dirty": dirty,
        "rawserve_loop": launcher.loop,
        "rawserve_python": args.rawserve_python,
        "rawserve_versions": versions(args.rawserve_python, RAWSERVE_PACKAGES),
        "peer_versions": versions(str(peer_python), PEER_PACKAGES) if peer_python.exists() else {},
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "rounds": args.rounds,
        "a_rounds": args.a_rounds,
        "quick": args.quick,
        "load": os.getloadavg(),
    }


def fmt(value: float, digits: int = 0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}{suffix}"


def ratio(value: float, low_high: Sequence[float] = ()) -> str:
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.2f}x"
    if low_high:
        text += f" ({low_high[0]:.2f}..{low_high[1]:.2f})"
    return text


def comparison_table(
    result: dict[str, Any], columns: Sequence[str], batching: bool = False
) -> list[str]:
    head = "| column | server | req/s | p50 ms | p99 ms | server CPU µs/req |"
    rule = "|---|---|---:|---:|---:|---:|"
    if batching:
        head += " mean batch | in-process items/s at that batch | fraction |"
        rule += "---:|---:|---:|"
    lines = [head + " errors |", rule + "---:|"]
    for column in columns:
        for cell in (c for c in result["cells"] if c["column"] == column):
            name = cell["label"]
            if cell["flavor"].startswith("rawserve"):
                name = f"**{name}**"
            line = (
                f"| {COLUMNS[column]} `{cell['shape']}` | {name} | {fmt(cell['rps'])} | "
                f"{fmt(cell['p50_ms'], 2)} | {fmt(cell['p99_ms'], 2)} | {fmt(cell['cpu_us'])} |"
            )
            if batching:
                line += (
                    f" {fmt(cell['batch'], 1)} | {fmt(cell['in_process_at_batch'])} | "
                    f"{fmt(cell['fraction_of_in_process'] * 100, 0, '%')} |"
                )
            lines.append(line + f" {cell['errors']} |")
    return lines


def ratios_table(result: dict[str, Any], target: str) -> list[str]:
    lines = [
        "| column | best peer (rps) | rawserve / best peer, rps | leanest peer (CPU) | "
        "CPU per request, leanest peer / rawserve | p99 rawserve / best peer ms | "
        f"target {target} |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for column, c in result["columns"].items():
        lines.append(
            f"| {COLUMNS[column]} | {FLAVORS[c['best_peer']].label} | "
            f"{ratio(c['rps_ratio'], c['rps_ratio_range'])} | {FLAVORS[c['leanest_peer']].label} | "
            f"{ratio(c['cpu_ratio'], c['cpu_ratio_range'])} | "
            f"{fmt(c['p99_ms'], 2)} / {fmt(c['best_peer_p99_ms'], 2)} | {c.get('verdict', '')} |"
        )
    return lines


def judge(report: dict[str, Any]) -> list[str]:
    """Each target of issue 14, with its figure and whether it is met."""
    s = report["scenarios"]
    lines = ["| target | figure | met |", "|---|---|---|"]
    for column, c in s.get("A", {}).get("columns", {}).items():
        met = (
            c["rps_ratio"] >= 1.25
            and c["cpu_ratio"] >= 1.25
            and c["p99_ms"] <= c["best_peer_p99_ms"]
        )
        c["verdict"] = "met" if met else "not met"
        lines.append(
            f"| A {COLUMNS[column]}: ≥ 1.25x the best peer in rps and CPU per request, "
            f"p99 no higher | {ratio(c['rps_ratio'])} rps, {ratio(c['cpu_ratio'])} CPU, "
            f"p99 {fmt(c['p99_ms'], 2)} vs {fmt(c['best_peer_p99_ms'], 2)} ms | "
            f"{'yes' if met else 'no'} |"
        )
    for column, c in s.get("B", {}).get("columns", {}).items():
        mine: dict[str, Any] = next(
            (x for x in s["B"]["cells"] if x["flavor"] == "rawserve" and x["column"] == column), {}
        )
        met = c["rps_ratio"] >= 4
        c["verdict"] = "met" if met else "not met"
        lines.append(
            f"| B {COLUMNS[column]}: ≥ 4x the best peer's rps | {ratio(c['rps_ratio'])} "
            f"({fmt(mine.get('fraction_of_in_process', float('nan')) * 100, 0, '%')} of in-process "
            f"at batch {fmt(mine.get('batch', float('nan')), 1)}) | {'yes' if met else 'no'} |"
        )
    for row in s.get("priority", {}).get("rows", []):
        if row["flavor"] != "rawserve":
            continue
        lines.append(
            f"| Priority: u=0 p99 under load ≤ unloaded p99 + one batch-64 run, every u=7 "
            f"answered 2xx | {fmt(row['loaded_p99_ms'], 1)} ms vs limit "
            f"{fmt(row['limit_ms'], 1)} ms; u=7: {row['load_answered']:,.0f} answered, "
            f"{row['load_non_2xx']:.0f} non-2xx, {row['load_failed']:.0f} failed | "
            f"{'yes' if row['met'] else 'no'} |"
        )
    foot = {r["flavor"]: r for r in s.get("footprint", {}).get("rows", [])}
    if "rawserve" in foot:
        r = foot["rawserve"]
        peer = foot.get("uvicorn")
        below = peer is not None and r["rss_full"] < peer["rss_full"]
        lines.append(
            f"| Footprint: RSS below FastAPI on uvicorn's | {r['rss_full'] / 2**20:.1f} MiB vs "
            f"{peer['rss_full'] / 2**20 if peer else float('nan'):.1f} MiB | "
            f"{'yes' if below else 'no' if peer else '—'} |"
        )
        lines.append(
            f"| Footprint: under 10% growth from N/2 to N requests (N = "
            f"{s['footprint']['requests']:,}) | {r['growth']:+.1%} | "
            f"{'yes' if r['growth'] < 0.10 else 'no'} |"
        )
        lines.append(
            f"| Footprint: start to ready under 1 s | {r['ready_s']:.2f} s | "
            f"{'yes' if r['ready_s'] < 1 else 'no'} |"
        )
    return lines


def markers(block: str) -> tuple[str, str]:
    """The comments around a generated block of docs/BENCHMARKS.md: the
    classic scenarios' ("main"), or one of OWN_BLOCK's."""
    if block == "main":
        return BEGIN, END
    return (
        f"<!-- tools/bench.py {block}: begin (generated; edit the tool, not this) -->",
        f"<!-- tools/bench.py {block}: end -->",
    )


def run_header(m: dict[str, Any], pinning: str = "") -> list[str]:
    """Which run, on what machine, with what software: at the top of every block."""
    return [
        f"Run {m['date']}: `{m['command']}`",
        "",
        f"- Machine: {m['cpus']} CPUs ({m['cpu']}), {m['kernel']}, Python {m['python']}, "
        f"{m['h2load']}; load average at the end {', '.join(f'{v:.2f}' for v in m['load'])}.",
        f"- rawserve: commit {m['commit']}"
        + (
            f" plus uncommitted changes in {', '.join(m['rawserve_dirty'])}"
            if m["rawserve_dirty"]
            else (" (git archive)" if "--rawserve-commit" in m["command"] else "")
        )
        + f", {m['rawserve_loop']} loop; "
        + ", ".join(f"{k} {v}" for k, v in m["rawserve_versions"].items())
        + ".",
        "- Peers (.venv-bench): "
        + (", ".join(f"{k} {v}" for k, v in m["peer_versions"].items()) or "none")
        + ".",
        "- "
        + (
            pinning
            or f"Servers on CPU {m['server_cpu']}, load clients on CPU {m['client_cpu']} (taskset)"
        )
        + f"; {m['rounds']} interleaved rounds ({m.get('a_rounds', m['rounds'])} for A), "
        "medians; ratios are medians of per-round ratios (range in brackets).",
        "",
    ]


def documents(report: dict[str, Any], images: dict[str, str]) -> dict[str, str]:
    """The generated blocks of this run, by name (see markers)."""
    s = report["scenarios"]
    out = {}
    if any(name not in OWN_BLOCK for name in s):
        out["main"] = markdown(report, images)
    if "h3" in s:
        out["h3"] = markdown_h3(report, images)
    if "workers" in s:
        out["workers"] = markdown_workers(report)
    return out


def markdown(report: dict[str, Any], images: dict[str, str]) -> str:
    m = report["machine"]
    s = {k: v for k, v in report["scenarios"].items() if k not in OWN_BLOCK}
    out = [
        BEGIN,
        "",
        "## Side by side (tools/bench.py)"
        + (" — QUICK SMOKE RUN, not a measurement" if m["quick"] else ""),
        "",
        *run_header(m),
    ]
    if "A" in s:
        a = s["A"]
        out += [
            "### Targets of issue 14 in this run",
            "",
            *judge(report),
            "",
            "### A: digits, `POST /predict`, JSON in and out",
            "",
            *comparison_table(
                a, [c for c in COLUMNS if any(x["column"] == c for x in a["cells"])], False
            ),
            "",
            *ratios_table(a, "1.25x in rps and CPU, p99 no higher"),
            "",
        ]
        if "A" in images:
            out += [f"![A: req/s and CPU per request]({images['A']})", ""]
    elif any(k in s for k in ("B", "priority", "footprint")):
        out += ["### Targets of issue 14 in this run", "", *judge(report), ""]
    for letter in ("B", "C"):
        if letter not in s:
            continue
        r = s[letter]
        curve = r["in_process"]
        out += [
            f"### {letter}: {MODELS['mlp' if letter == 'B' else 'cnn'].description}, 64 clients, "
            "one item each",
            "",
            "In-process ONNX Runtime on the server's CPU, items/s by batch size: "
            + ", ".join(f"{k}: {float(v):,.0f}" for k, v in curve.items())
            + '. "fraction" is req/s over in-process items/s at the batch the server ran '
            "(the peers run one request per session run: batch 1).",
            "",
            *comparison_table(r, ["h1", "h2c"], True),
            "",
            *ratios_table(r, "4x rps" if letter == "B" else "— (none in the issue)"),
            "",
        ]
        if letter in images:
            out += [f"![{letter}: req/s]({images[letter]})", ""]
    if "priority" in s:
        p = s["priority"]
        out += [
            "### Priority isolation on B (HTTP/1.1)",
            "",
            f"Per round, sequential `priority: u=0` probes (one connection) for "
            f"{max(500, p['probe_ms'] // 2) / 1000:g} s unloaded, then for "
            f"{p['probe_ms'] / 1000:g} s under a `priority: u=7` load from 32 connections that "
            "starts 1 s before the probes and ends 1 s after them; percentiles over the probes of "
            "all rounds. One batch-64 run of B in-process on the server's CPU: "
            f"{fmt(p['batch64_ms'], 2)} ms. The peers ignore the priority header (they have no "
            "queue to order).",
            "",
            "| server | unloaded p50 / p99 ms | loaded p50 / p99 ms | loaded p99 per round | "
            "limit ms | probes unloaded / loaded | u=7 load req/s | "
            "u=7 answered / non-2xx / failed | met |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in p["rows"]:
            out.append(
                f"| {row['label']} | {fmt(row['unloaded_p50_ms'], 2)} / "
                f"{fmt(row['unloaded_p99_ms'], 2)} | {fmt(row['loaded_p50_ms'], 2)} / "
                f"{fmt(row['loaded_p99_ms'], 2)} | "
                f"{', '.join(fmt(v, 1) for v in row['loaded_p99_by_round_ms'])} | "
                f"{fmt(row['limit_ms'], 2)} | "
                f"{row['unloaded_probes']:,} / {row['loaded_probes']:,} | {fmt(row['load_rps'])} | "
                f"{row['load_answered']:,.0f} / {row['load_non_2xx']:.0f} / "
                f"{row['load_failed']:.0f} | {'yes' if row['met'] else 'no'} |"
            )
        out.append("")
        if "priority" in images:
            out += [f"![priority]({images['priority']})", ""]
    if "footprint" in s:
        f = s["footprint"]
        n = f["requests"]
        out += [
            "### Footprint (A, HTTP/1.1 -c 16)",
            "",
            f"| server | start to ready s | RSS ready MiB | after warm-up | after {n // 2:,} | "
            f"after {n:,} | growth | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in f["rows"]:
            out.append(
                f"| {row['label']} | {row['ready_s']:.2f} | {row['rss_ready'] / 2**20:.1f} | "
                f"{row['rss_warm'] / 2**20:.1f} | {row['rss_half'] / 2**20:.1f} | "
                f"{row['rss_full'] / 2**20:.1f} | {row['growth']:+.1%} | {row['errors']} |"
            )
        out.append("")
    if "cache" in s:
        c = s["cache"]
        out += [
            "### Result cache: one body repeated (B, HTTP/1.1 -c 16)",
            "",
            "Hit rate: rawserve's cache lookups (its `/metrics`), Redis's keyspace hits for the "
            "FastAPI app. " + (c.get("note") or "") + ".",
            "",
            "| server | hit rate | req/s | p50 ms | p99 ms | server CPU µs/req | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for cell in c["cells"]:
            out.append(
                f"| {cell['label']} | {fmt(cell['hit_rate'] * 100, 1, '%')} | {fmt(cell['rps'])} "
                f"| {fmt(cell['p50_ms'], 2)} | {fmt(cell['p99_ms'], 2)} | {fmt(cell['cpu_us'])} "
                f"| {cell['errors']} |"
            )
        out.append("")
        if "cache" in images:
            out += [f"![cache]({images['cache']})", ""]
    if "push" in s:
        p = s["push"]
        out += [
            "### Push: 64 results of B over one h2c connection",
            "",
            "`POST /predict/batch` with 64 fresh rows, results pushed (rawserve.client: "
            "`request`, then `wait_pushes`), against 64 concurrent `POST /predict` on one "
            f"connection; time from the first byte sent to the last result, {p['reps']} "
            f"repetitions alternating the order, after one warm-up; {p['errors']} results missing "
            "or not 200.",
            "",
            "| method | median ms | min ms | max ms |",
            "|---|---:|---:|---:|",
        ]
        for row in p["rows"]:
            name = "batch + push" if row["method"] == "push" else "64 requests"
            out.append(
                f"| {name} | {row['median_ms']:.1f} | {row['min_ms']:.1f} | {row['max_ms']:.1f} |"
            )
        out.append("")
    errors = error_lines(report, [k for k in report["scenarios"] if k not in OWN_BLOCK])
    out += ["### Errors", "", *(errors or ["No request failed or was answered non-2xx."]), ""]
    findings = report.get("server_log_errors") or []
    out += [
        "Server logs: "
        + ("; ".join(findings) if findings else "no server logged an error or a traceback.")
    ]
    out += ["", END]
    return "\n".join(out) + "\n"


def markdown_h3(report: dict[str, Any], images: dict[str, str]) -> str:
    m = report["machine"]
    h = report["scenarios"]["h3"]
    begin, end = markers("h3")
    out = [
        begin,
        "",
        "### HTTP/3: A's request over QUIC (tools/bench.py --scenarios h3)"
        + (" — QUICK SMOKE RUN, not a measurement" if m["quick"] else ""),
        "",
        *run_header(m),
        "Load client: tools/h3load.py (aioquic), one QUIC connection per run, 16 requests in "
        "flight (16 streams) or one at a time, pinned like h2load; it reads the server's CPU "
        "(process tree, /proc) around the measured requests only. A Python QUIC client "
        "saturates near 1,200-2,500 req/s on a core, so req/s is the client's limit and "
        "**server CPU per request** is the figure that compares servers. FastAPI on hypercorn "
        "runs tools/peers/fastapi_app.py with `--quic-bind`. Load average at the end of the "
        f"scenario: {', '.join(f'{v:.2f}' for v in h.get('load', m['load']))}"
        + (" (a busy machine: other work shared both cores)." if busy(h, m) else "."),
        "",
        *comparison_table(h, [c for c in H3_STREAMS if any(x["column"] == c for x in h["cells"])]),
        "",
        "| column | rawserve CPU µs/req | hypercorn CPU µs/req | hypercorn / rawserve, "
        "per-round median (range) | target: rawserve at most half of hypercorn's | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for column, c in h["columns"].items():
        mine = cell_of(h, "rawserve", column)
        peer = cell_of(h, c["leanest_peer"], column)
        met = c["cpu_ratio"] >= 2
        out.append(
            f"| {COLUMNS[column]} | {fmt(mine.get('cpu_us', math.nan))} | "
            f"{fmt(peer.get('cpu_us', math.nan))} | {ratio(c['cpu_ratio'], c['cpu_ratio_range'])} "
            f"| ≥ 2.00x | {'yes' if met else 'no'} |"
        )
    out.append("")
    if "h3" in images:
        out += [f"![HTTP/3: server CPU per request]({images['h3']})", ""]
    errors = error_lines(report, ["h3"])
    out += [
        "Errors: " + (" ".join(errors) if errors else "no request failed or was answered non-2xx."),
        "",
        end,
    ]
    return "\n".join(out) + "\n"


def markdown_workers(report: dict[str, Any]) -> str:
    m = report["machine"]
    w = report["scenarios"]["workers"]
    begin, end = markers("workers")
    cpus = w.get("cpus", m["cpus"])
    out = [
        begin,
        "",
        "### Workers: A with N server processes (tools/bench.py --scenarios workers)"
        + (" — QUICK SMOKE RUN, not a measurement" if m["quick"] else ""),
        "",
        *run_header(
            m,
            f"Servers and h2load unpinned (taskset over all {cpus} CPUs): on this "
            f"{cpus}-core machine h2load, the workers and anything else running share the "
            "cores, so two workers cannot double the rate, and h2load's own CPU is taken from "
            "them",
        ),
        "HTTP/1.1 `-c 16` as in A; h2c from 16 connections x 4 streams (SO_REUSEPORT hashes "
        "connections, not streams, to workers: A's one connection would reach one worker, and "
        "4 connections would split 3-1 or 4-0 more often than not). Server CPU per "
        "request is the whole process tree's (supervisor and workers). Load average at the end "
        f"of the scenario: {', '.join(f'{v:.2f}' for v in w.get('load', m['load']))}"
        + (" (a busy machine: other work shared both cores)." if busy(w, m) else "."),
        "",
    ]
    for flavor, why in w.get("refused", {}).items():
        out += [f"- {FLAVORS[flavor].label}: refused to start: `{why}`", ""]
    if w["cells"]:
        out += [*comparison_table(w, ["h1", "h2c"]), ""]
    if w.get("scaling") or w.get("columns"):
        out += [
            "| column | rawserve --workers 2 / --workers 1, rps | best peer with 2 workers | "
            "rawserve --workers 2 / best peer, rps | CPU per request, leanest peer / rawserve |",
            "|---|---:|---|---:|---:|",
        ]
        for column in ("h1", "h2c"):
            scale = w.get("scaling", {}).get(column)
            c = w.get("columns", {}).get(column)
            if scale is None and c is None:
                continue
            out.append(
                f"| {COLUMNS[column]} | "
                + (ratio(scale["ratio"], scale["range"]) if scale else "—")
                + " | "
                + (
                    f"{FLAVORS[c['best_peer']].label} | "
                    f"{ratio(c['rps_ratio'], c['rps_ratio_range'])} | "
                    f"{ratio(c['cpu_ratio'], c['cpu_ratio_range'])} |"
                    if c
                    else "— | — | — |"
                )
            )
        out.append("")
    errors = error_lines(report, ["workers"])
    out += [
        "Errors: " + (" ".join(errors) if errors else "no request failed or was answered non-2xx."),
        "",
        end,
    ]
    return "\n".join(out) + "\n"


def cell_of(result: dict[str, Any], flavor: str, column: str) -> dict[str, Any]:
    return next((c for c in result["cells"] if c["flavor"] == flavor and c["column"] == column), {})


def busy(result: dict[str, Any], m: dict[str, Any]) -> bool:
    """More runnable work than this run's own two processes (server and client)."""
    load = result.get("load", m["load"])
    return bool(load[0] > 2.5)


def error_lines(report: dict[str, Any], only: Sequence[str] | None = None) -> list[str]:
    lines = []
    for name, result in report["scenarios"].items():
        if only is not None and name not in only:
            continue
        for cell in result.get("cells", []):
            for i, run in enumerate(cell["runs"]):
                if run["failed"] or run["errored"] or run["timeout"] or run["non_2xx"]:
                    lines.append(
                        f"- {name} {cell['flavor']} {cell['column']} round {i + 1}: "
                        f"{run['failed']} failed, {run['errored']} errored, {run['timeout']} "
                        f"timeout, {run['non_2xx']} non-2xx. {run['note']}"
                    )
        for row in result.get("rows", []):
            if row.get("load_non_2xx") or row.get("load_failed") or row.get("errors"):
                lines.append(f"- {name} {row.get('flavor', row.get('method'))}: {row}")
        if result.get("errors"):
            lines.append(f"- {name}: {result['errors']} results missing or not 200")
    return lines


def plots(report: dict[str, Any], directory: Path) -> dict[str, str]:
    """PNG plots (matplotlib); {} when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress_line("   matplotlib not installed: no plots")
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    s = report["scenarios"]
    made: dict[str, str] = {}

    def bars(ax: Any, result: dict[str, Any], key: str, columns: Sequence[str], title: str) -> None:
        flavors = list(dict.fromkeys(c["flavor"] for c in result["cells"]))
        width = 0.8 / max(1, len(flavors))
        for i, flavor in enumerate(flavors):
            xs, ys = [], []
            for j, column in enumerate(columns):
                cell = next(
                    (c for c in result["cells"] if c["flavor"] == flavor and c["column"] == column),
                    None,
                )
                if cell is not None:
                    xs.append(j + i * width)
                    ys.append(cell[key])
            color = f"C{list(FLAVORS).index(flavor) % 10}"
            ax.bar(xs, ys, width, label=FLAVORS[flavor].label, color=color)
        ax.set_xticks([j + width * (len(flavors) - 1) / 2 for j in range(len(columns))])
        ax.set_xticklabels([COLUMNS[c] for c in columns])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)

    if "A" in s:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        bars(axes[0], s["A"], "rps", TCP_COLUMNS, "A (digits): requests/s, higher is better")
        bars(
            axes[1],
            s["A"],
            "cpu_us",
            TCP_COLUMNS,
            "A: server CPU µs per request, lower is better",
        )
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(directory / "bench-a.png", dpi=100)
        plt.close(fig)
        made["A"] = "bench-a.png"
    for letter in ("B", "C"):
        if letter not in s:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        bars(ax, s[letter], "rps", ["h1", "h2c"], f"{letter}: requests/s, 64 clients")
        curve = {int(k): v for k, v in s[letter]["in_process"].items()}
        for size in (1, 32):
            if size in curve:
                ax.axhline(curve[size], ls="--", lw=1, color="gray")
                ax.text(1.45, curve[size], f"in-process, batch {size}", fontsize=7, va="bottom")
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"bench-{letter.lower()}.png"
        fig.savefig(directory / name, dpi=100)
        plt.close(fig)
        made[letter] = name
    if "priority" in s:
        rows = s["priority"]["rows"]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        labels = [r["label"] for r in rows]
        keys = ["unloaded_p50_ms", "unloaded_p99_ms", "loaded_p50_ms", "loaded_p99_ms"]
        width = 0.2
        for i, key in enumerate(keys):
            ax.bar([j + i * width for j in range(len(rows))], [r[key] for r in rows], width,
                   label=key.replace("_ms", "").replace("_", " "))  # fmt: skip
        for j, r in enumerate(rows):
            if r["flavor"] == "rawserve":
                ax.hlines(r["limit_ms"], j - 0.1, j + 0.7, colors="red", label="target (rawserve)")
        ax.set_xticks([j + 1.5 * width for j in range(len(rows))])
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("ms")
        ax.set_title("Priority: u=0 probe latency, unloaded and under a u=7 load (B)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(directory / "bench-priority.png", dpi=100)
        plt.close(fig)
        made["priority"] = "bench-priority.png"
    if "cache" in s:
        fig, ax = plt.subplots(figsize=(8, 4))
        cells = s["cache"]["cells"]
        ax.barh([c["label"] for c in cells], [c["rps"] for c in cells])
        ax.set_xlabel("requests/s")
        ax.set_title("One body repeated on B: result cache on and off")
        fig.tight_layout()
        fig.savefig(directory / "bench-cache.png", dpi=100)
        plt.close(fig)
        made["cache"] = "bench-cache.png"
    if "h3" in s and s["h3"]["cells"]:
        h = s["h3"]
        columns = [c for c in H3_STREAMS if any(x["column"] == c for x in h["cells"])]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        bars(ax, h, "cpu_us", columns, "HTTP/3, digits: server CPU µs per request, lower is better")
        for j, column in enumerate(columns):
            peer = cell_of(h, "hypercorn", column)
            if peer:
                label = "target: half of hypercorn's" if j == 0 else None
                ax.hlines(peer["cpu_us"] / 2, j - 0.4, j + 0.8, colors="red", ls="--", label=label)
        ax.set_ylabel("µs of server CPU per request")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(directory / "bench-h3.png", dpi=100)
        plt.close(fig)
        made["h3"] = "bench-h3.png"
    return made


def write_doc(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace a generated part of ``path`` (between ``begin`` and ``end``),
    keeping what people wrote around it; append it when there is none yet."""
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        _, tail = rest.split(end, 1)
        path.write_text(head + text.rstrip("\n") + tail)
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + text)


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])

    def names(choices: Sequence[str]) -> Callable[[str], list[str]]:
        def parse(text: str) -> list[str]:
            items = [t.strip() for t in text.split(",") if t.strip()]
            unknown = [t for t in items if t not in choices]
            if unknown or not items:
                raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
            return items

        return parse

    servers = ("rawserve", *PEER_FLAVORS)
    parser.add_argument("--scenarios", type=names(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument(
        "--servers", type=names(servers), default=list(servers), help=", ".join(servers)
    )
    parser.add_argument("--columns", type=names(tuple(COLUMNS)), default=list(COLUMNS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--a-rounds",
        type=int,
        default=5,
        help="rounds of scenario A (5): its targets are ratios of a few tenths, "
        "which one noisy round of three can move across",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measured run (3)")
    parser.add_argument(
        "--probe-seconds",
        type=float,
        default=6.0,
        help="u=0 probes under load per round (6; unloaded: half of it)",
    )
    parser.add_argument("--footprint-requests", type=int, default=100_000)
    parser.add_argument("--push-reps", type=int, default=10)
    parser.add_argument(
        "--curve-time", type=float, default=0.5, help="seconds per in-process batch size (0.5)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: one round, tiny counts, no document unless --doc",
    )
    parser.add_argument("--server-cpu", default="0", help="taskset CPU list for servers (0)")
    parser.add_argument("--client-cpu", default="1", help="taskset CPU list for h2load (1)")
    parser.add_argument("--no-pin", action="store_true", help="no taskset")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per h2load run")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument(
        "--rawserve-python", default=sys.executable, help="the interpreter running rawserve"
    )
    parser.add_argument("--peer-venv", default=str(BENCH_VENV), help="the peers' virtualenv")
    parser.add_argument(
        "--rawserve-commit",
        metavar="REV",
        help="serve rawserve/ as committed at REV (git archive), not the work tree",
    )
    parser.add_argument(
        "--rawserve-arg", action="append", default=[], help="extra rawserve argument (repeatable)"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--doc", type=Path, help=f"write the results here (default {DOC.relative_to(ROOT)})"
    )
    parser.add_argument(
        "--img-dir", type=Path, help=f"plots here (default {IMG.relative_to(ROOT)})"
    )
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.rawserve_cache = False
    if args.quick:
        args.rounds = args.a_rounds = 1
        args.footprint_requests = min(args.footprint_requests, 600)
        args.push_reps = min(args.push_reps, 1)
        args.curve_time = min(args.curve_time, 0.01)
        args.probe_seconds = 0.25
    else:
        args.doc = args.doc or DOC
        args.img_dir = args.img_dir or IMG
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    peer_bin = Path(args.peer_venv) / "bin"
    missing = [
        s for s in args.servers if s in PEER_BINARIES and not (peer_bin / PEER_BINARIES[s]).exists()
    ]
    if missing:
        parser.error(
            f"not installed in {peer_bin}: {', '.join(missing)} "
            "(python3 -m venv .venv-bench && "
            ".venv-bench/bin/pip install -e '.[bench]')"
        )
    if shutil.which("h2load") is None:
        parser.error("h2load not found (Debian: nghttp2-client)")
    if not CERT.exists() or not KEY.exists():
        subprocess.run([args.rawserve_python, "-m", "rawserve", "certs"], cwd=ROOT, check=True)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_cpu is not None:
        # This process (the push client) runs where h2load does.
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(0, {int(c) for c in args.client_cpu.split(",")})
    with tempfile.TemporaryDirectory(prefix="rawserve-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.run()
        except KeyboardInterrupt:
            progress_line("interrupted; servers stopped")
            return 130
        report = bench.report
        report["machine"] = machine(args, bench.launcher)
        report["server_log_errors"] = bench.launcher.findings
    images = plots(report, args.img_dir) if args.img_dir else {}
    where = args.doc.parent if args.doc else Path.cwd()
    images = {k: os.path.relpath(args.img_dir / v, where) for k, v in images.items()}
    blocks = documents(report, images)
    text = "\n".join(blocks.values())
    if args.doc:
        for name, block in blocks.items():
            write_doc(args.doc, block, *markers(name))
        progress_line(f"wrote {args.doc} ({', '.join(blocks)})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    print(text)
    return 1 if error_lines(report) else 0


if __name__ == "__main__":
    sys.exit(main())
