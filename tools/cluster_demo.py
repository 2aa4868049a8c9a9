"""Several rawserve replicas behind HAProxy, sharing one Redis (issue 17, build 2).

Each replica is ``python -m rawserve`` (the built-in app) in a network
namespace of its own, that is a "machine" with its own address, joined to the
others by a veth pair on a bridge in the host namespace. Redis runs in one
more namespace; HAProxy (Debian's) runs in the host namespace, listens on
127.0.0.1 for clients (h2c and h2 over TLS) and speaks h2c to the replicas
(``proto h2``), checking each on ``/readyz``. The configuration is
deploy/haproxy/haproxy.cfg, rendered with this run's addresses.

    bridge rsdb<pid> 10.213.K.1 (HAProxy's side)
      ├─ veth ─ netns rsdemo-<pid>-cache  10.213.K.2   redis-server :6379
      ├─ veth ─ netns rsdemo-<pid>-r0     10.213.K.11  rawserve :8000 --cache-url redis://10.213.K.2:6379/0
      └─ veth ─ netns rsdemo-<pid>-r1     10.213.K.12  rawserve :8000 ...

What it shows, as JSON on stdout (progress goes to stderr):

- ``cache``: one new input sent through HAProxy once per replica (round
  robin, so every replica gets it): the model runs once in the whole cluster
  (the replicas' ``rawserve_batch_size_sum`` on /metrics, summed), the first
  answer is ``Cache-Status: rawserve; fwd=miss``, the others hits. And the
  limit: the same new input sent to two replicas at the same instant runs
  twice (single-flight is per process; Redis holds the result once stored).
- ``kills``: two rounds of a closed-loop load of ``priority: u=7``
  predictions (unique inputs, so that the model runs) with, beside it, a few
  connections each sending ``priority: u=0`` probes and ``u=7`` controls in
  turn, one at a time, all through HAProxy over h2c (python-hyper's h2, a
  client light enough that the replicas saturate before it does); halfway
  through each round, one replica gets SIGKILL. Round 1 runs behind the template
  with HAProxy's default retry policy (``retry-on conn-failure``: only
  requests that never reached a server are retried), round 2 behind the
  template as it is (L7 retries: ``retry-on conn-failure empty-response``).
  Counted per round: the client errors and their kind, the requests lost on
  the killed replica by HAProxy's own counters, how long until HAProxy
  marked it down, the answers survivors gave afterwards, probe, control and
  load latency percentiles before and after the kill, and the survivors'
  queue wait per urgency from /metrics (which shows that the ``priority``
  header crossed HAProxy and what the scheduler made of it).
- ``rejoin``: between the rounds the killed replica starts again; how long
  until HAProxy sends it traffic.
- ``replica_requests_by_protocol``: predictions and health checks reached
  the replicas as HTTP/2.
- ``cleanup``: namespaces, veths, the bridge and processes of this run are
  removed on every exit (failure, Ctrl-C, SIGTERM included) and checked gone;
  leftovers of an earlier run that was itself killed with SIGKILL are removed
  at the next start.

Exit status: 0 when every check held, 1 when one did not, 2 when the demo
cannot run here (not root, no network namespaces, haproxy or redis-server
missing: the message says which and what to do).

    sudo python tools/cluster_demo.py [--replicas 3] [--seconds 20] [--quick]
    # a model-bound variant, where priorities change latency end to end:
    sudo python tools/cluster_demo.py --replicas 2 --concurrency 64 \
        --model build/models/mlp.onnx --replica-arg=--max-batch-size=2

tests/test_cluster_demo.py runs a small version (2 replicas, a few hundred
requests per round, one kill per round).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rawserve.serving.tls import ensure_dev_certificate  # noqa: E402

TEMPLATE = ROOT / "deploy" / "haproxy" / "haproxy.cfg"

# Every name this tool creates starts with these and carries its pid, so a
# later run can tell its own leftovers (from a run killed with SIGKILL) from
# anyone else's and remove them only when that pid is gone.
NS_PREFIX = "rsdemo-"
BRIDGE_PREFIX = "rsdb"
VETH_PREFIX = "rsdv"
REPLICA_PORT = 8000
REPLICA_TLS_PORT = 8443
REDIS_PORT = 6379
MAX_REPLICAS = 8
MAX_SECONDS = 300.0
# The bundled model; with --model, the replicas serve another and the row
# width is read from its V2 metadata.
DEFAULT_MODEL = "digits"
BACKEND = "rawserve_replicas"


# Each spawned process's log file, by pid: what a failure message quotes.
LOGS: dict[int, Path] = {}


class CannotRun(Exception):
    """The demo cannot run on this machine; the message says why and what to do."""


class DemoFailed(Exception):
    """Something the demo needs went wrong while it ran (a replica never got ready...)."""


# -- small helpers -----------------------------------------------------------


def log(message: str) -> None:
    print(f"cluster_demo: {message}", file=sys.stderr, flush=True)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"{' '.join(argv)} did not finish in 30 s") from None
    if check and done.returncode != 0:
        raise DemoFailed(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")
    return done


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 2)


def latency_summary(values_ms: list[float]) -> dict[str, Any]:
    return {
        "count": len(values_ms),
        "p50_ms": percentile(values_ms, 50),
        "p99_ms": percentile(values_ms, 99),
    }


def random_row(rng: random.Random, width: int) -> list[float]:
    # Three decimals: a collision between two rows (a cache hit where the
    # load wants a model run) is out of the question. 0..16: digits' pixels.
    return [round(rng.uniform(0, 16), 3) for _ in range(width)]


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


# -- preflight and leftovers -------------------------------------------------


def preflight() -> None:
    if sys.platform != "linux":
        raise CannotRun("network namespaces are Linux only")
    if os.geteuid() != 0:
        raise CannotRun(
            "must run as root: it creates network namespaces, veth pairs and a bridge "
            "(sudo python tools/cluster_demo.py)"
        )
    needs = {"ip": "iproute2", "haproxy": "haproxy", "redis-server": "redis-server"}
    missing = [
        f"{tool} (Debian package {pkg})" for tool, pkg in needs.items() if not shutil.which(tool)
    ]
    if missing:
        raise CannotRun(
            "missing "
            + ", ".join(missing)
            + ": apt-get install "
            + " ".join(needs[t.split()[0]] for t in missing)
        )
    # The only sure test of whether this machine (a container may forbid it)
    # lets us create a namespace is to create one.
    probe = f"{NS_PREFIX}{os.getpid()}-probe"
    done = sh("ip", "netns", "add", probe, check=False)
    if done.returncode != 0:
        raise CannotRun(
            f"cannot create network namespaces here (ip netns add: {done.stderr.strip()}); "
            "run as root on a host or a privileged container (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        )
    sh("ip", "netns", "del", probe, check=False)


def owner_pid(name: str, prefix: str) -> int | None:
    m = re.match(re.escape(prefix) + r"(\d+)", name)
    return int(m.group(1)) if m else None


def remove_namespace(ns: str) -> None:
    pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    # A namespace is only freed once its last process is gone.
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if p.isdigit() and pid_alive(int(p))]
        time.sleep(0.05)
    sh("ip", "netns", "del", ns, check=False)


def our_namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NS_PREFIX)]


def our_links() -> list[str]:
    out = sh("ip", "-o", "link", "show", check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if owner_pid(n, BRIDGE_PREFIX) or owner_pid(n, VETH_PREFIX)]


def remove_stale() -> list[str]:
    """Namespaces and links of earlier demo runs whose process is dead."""
    removed = []
    for ns in our_namespaces():
        pid = owner_pid(ns, NS_PREFIX)
        if pid is not None and not pid_alive(pid):
            remove_namespace(ns)
            removed.append(ns)
    for link in our_links():
        pid = owner_pid(link, BRIDGE_PREFIX) or owner_pid(link, VETH_PREFIX)
        if pid is not None and not pid_alive(pid):
            sh("ip", "link", "del", link, check=False)
            removed.append(link)
    return removed


def pick_subnet() -> str:
    used = sh("ip", "-o", "-4", "addr", "show", check=False).stdout
    used += sh("ip", "-4", "route", "show", check=False).stdout
    start = os.getpid() % 250
    for k in range(250):
        prefix = f"10.213.{(start + k) % 250 + 1}"
        if f"{prefix}." not in used:
            return prefix
    raise CannotRun("no free 10.213.K.0/24 subnet for the demo's bridge")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the cluster -------------------------------------------------------------


@dataclass
class Machine:
    role: str  # "cache", "r0", "r1", ...
    ns: str
    address: str
    veth: str


@dataclass
class Balancer:
    """One HAProxy process: its listeners, stats socket and log."""

    name: str
    l7_retries: bool
    proc: subprocess.Popen[bytes]
    h2c_port: int
    tls_port: int
    stats_socket: Path
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.h2c_port}{path}"

    def command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.stats_socket))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, dict[str, str]]:
        """HAProxy's "show stat" rows of the replicas' backend, by server name."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            r["svname"]: r
            for r in rows
            if r["pxname"] == BACKEND and r["svname"] not in ("BACKEND", "FRONTEND")
        }

    def wait_status(self, server: str, status: str, timeout_s: float) -> float | None:
        """Seconds until HAProxy shows ``server`` in ``status``; None if it never does."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s and not STOP.is_set():
            with contextlib.suppress(OSError, KeyError):  # the socket may not be there yet
                if self.server_states()[server]["status"].startswith(status):
                    return time.monotonic() - started
            time.sleep(0.02)
        return None


@dataclass
class Cluster:
    """Everything one run creates, so that cleanup() can take all of it down."""

    replicas: int
    workdir: Path
    template: Path = TEMPLATE
    tag: str = field(default_factory=lambda: str(os.getpid()))
    subnet: str = ""
    bridge: str = ""
    machines: dict[str, Machine] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cache_url: str = ""
    model: str = DEFAULT_MODEL
    model_path: str = ""  # "" serves the bundled model
    input_width: int = 0
    replica_args: list[str] = field(default_factory=list)
    backend_tls: bool = False

    # network

    def build_network(self) -> None:
        self.subnet = pick_subnet()
        self.bridge = f"{BRIDGE_PREFIX}{self.tag}"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        self.add_machine("cache", f"{self.subnet}.2")
        for i in range(self.replicas):
            self.add_machine(f"r{i}", f"{self.subnet}.{11 + i}")

    def add_machine(self, role: str, address: str) -> None:
        ns = f"{NS_PREFIX}{self.tag}-{role}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        # Host side "rsdv<pid><r0|c>" fits the 15-byte limit on interface names.
        veth = f"{VETH_PREFIX}{self.tag}{'c' if role == 'cache' else role}"
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.links.append(veth)
        sh("ip", "link", "set", veth, "master", self.bridge)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        self.machines[role] = Machine(role, ns, address, veth)

    # processes

    def spawn(self, name: str, argv: list[str], ns: str | None = None) -> subprocess.Popen[bytes]:
        if ns is not None:
            argv = ["ip", "netns", "exec", ns, *argv]
        out = open(self.workdir / f"{name}.log", "wb")
        # A session of its own: Ctrl-C in the terminal reaches only this tool,
        # which then takes everything down in order.
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        out.close()
        LOGS[proc.pid] = self.workdir / f"{name}.log"
        self.procs[name] = proc
        return proc

    def start_redis(self) -> str:
        cache = self.machines["cache"]
        self.spawn(
            "redis",
            [
                "redis-server",
                "--bind",
                cache.address,
                "--port",
                str(REDIS_PORT),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                str(self.workdir),
            ],
            cache.ns,
        )
        wait_tcp(cache.address, REDIS_PORT, self.procs["redis"], "redis-server")
        self.cache_url = f"redis://{cache.address}:{REDIS_PORT}/0"
        return self.cache_url

    def start_replicas(self) -> None:
        # Made once here, so that replicas starting together do not race to
        # write the development certificate they share.
        ensure_dev_certificate(ROOT / "certs")
        for i in range(self.replicas):
            self.start_replica(i)
        for i in range(self.replicas):
            wait_ready(self.replica_url(i), self.procs[f"r{i}"], f"replica r{i}")
        meta = httpx.get(f"{self.replica_url(0)}/v2/models/{self.model}", timeout=5).json()
        self.input_width = int(meta["inputs"][0]["shape"][-1])

    def start_replica(self, i: int) -> None:
        old = self.procs.get(f"r{i}")
        if old is not None:
            old.wait(10)  # reaped before its name is reused
        env_python = sys.executable
        self.spawn(
            f"r{i}",
            [
                env_python,
                "-m",
                "rawserve",
                "--host",
                "0.0.0.0",
                "--http-port",
                str(REPLICA_PORT),
                "--port",
                str(REPLICA_TLS_PORT) if self.backend_tls else "-1",
                "--certs-dir",
                str(ROOT / "certs"),
                "--quic-port",
                "0",
                "--cache-url",
                self.cache_url,
                *(["--model", f"{self.model}={self.model_path}"] if self.model_path else []),
                *self.replica_args,
                "--log-level",
                "warning",
            ],
            self.machines[f"r{i}"].ns,
        )

    def backend_port(self) -> int:
        return REPLICA_TLS_PORT if self.backend_tls else REPLICA_PORT

    def backend_options(self) -> str:
        if not self.backend_tls:
            return " proto h2"  # h2c: prior knowledge
        # h2 over TLS to each replica, chosen by ALPN; checks over TLS too.
        # "verify none" only because the demo's replicas share a self-signed
        # development certificate made for 127.0.0.1: give real replicas a
        # certificate for their names and use "verify required ca-file ...".
        return " ssl verify none alpn h2 check-alpn h2"

    def replica_url(self, i: int) -> str:
        return f"http://{self.machines[f'r{i}'].address}:{REPLICA_PORT}"

    def render_haproxy(self, name: str, l7_retries: bool) -> Balancer:
        pem = self.workdir / "haproxy.pem"
        # The development certificate python -m rawserve makes for itself
        # (self-signed, for 127.0.0.1 and localhost): enough for a demo.
        cert, key, _ = ensure_dev_certificate(ROOT / "certs")
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        pem.chmod(0o600)
        h2c_port, tls_port = free_port(), free_port()
        stats_socket = self.workdir / f"{name}.sock"
        servers = "\n".join(
            f"    server r{i} {self.machines[f'r{i}'].address}:{self.backend_port()}"
            + self.backend_options()
            for i in range(self.replicas)
        )
        values = {
            "stats_socket": str(stats_socket),
            "h2c_bind": f"127.0.0.1:{h2c_port}",
            "tls_bind": f"127.0.0.1:{tls_port}",
            "tls_pem": str(pem),
            "servers": servers,
        }
        text = self.template.read_text()
        for key_, value in values.items():
            text = text.replace("{{" + key_ + "}}", value)
        if "{{" in text:
            raise DemoFailed(f"{self.template} has a placeholder this tool does not fill")
        if not l7_retries:
            # HAProxy's default: retry only requests that never reached a
            # server (the connection failed), never one a replica took.
            text = re.sub(r"(?m)^(\s*)retry-on .*$", r"\1retry-on conn-failure", text)
        retry_on = re.findall(r"(?m)^\s*retry-on (.*)$", text)
        cfg = self.workdir / f"{name}.cfg"
        cfg.write_text(text)
        checked = sh("haproxy", "-c", "-f", str(cfg), check=False)
        if checked.returncode != 0:
            raise DemoFailed(f"haproxy refuses {cfg}: {checked.stdout}{checked.stderr}")
        proc = self.spawn(name, ["haproxy", "-db", "-f", str(cfg)])
        retried = bool(retry_on) and "empty-response" in retry_on[-1]
        return Balancer(
            name, retried, proc, h2c_port, tls_port, stats_socket, self.workdir / f"{name}.log"
        )

    def start_haproxy(self, name: str, l7_retries: bool) -> Balancer:
        balancer = self.render_haproxy(name, l7_retries)
        wait_tcp("127.0.0.1", balancer.h2c_port, balancer.proc, "haproxy")
        for i in range(self.replicas):
            if balancer.wait_status(f"r{i}", "UP", 30) is None:
                raise DemoFailed(f"HAProxy did not see r{i} up within 30 s")
        return balancer

    def cleanup(self) -> dict[str, Any]:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        for ns in self.namespaces:
            remove_namespace(ns)
        for link in reversed(self.links):
            if link in our_links():
                sh("ip", "link", "del", link, check=False)
        left_ns = [ns for ns in our_namespaces() if ns in self.namespaces]
        left_links = [link for link in our_links() if link in self.links]
        left_procs = [name for name, proc in self.procs.items() if proc.poll() is None]
        return {
            "namespaces_created": len(self.namespaces),
            "namespaces_left": left_ns,
            "links_left": left_links,
            "processes_left": left_procs,
            "clean": not (left_ns or left_links or left_procs),
        }


def exited(name: str, proc: subprocess.Popen[bytes]) -> str:
    """What a process that should have kept running said last (its log goes
    away with the run's directory unless --keep-logs)."""
    tail = ""
    log_path = LOGS.get(proc.pid)
    if log_path is not None:
        with contextlib.suppress(OSError):
            lines = log_path.read_text(errors="replace").strip().splitlines()
            tail = ": " + " | ".join(lines[-4:])
    return f"{name} exited with status {proc.returncode}{tail}"


def wait_tcp(host: str, port: int, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoFailed(exited(name, proc))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise DemoFailed(f"{name} did not listen on {host}:{port} within 20 s")


def wait_ready(url: str, proc: subprocess.Popen[bytes], name: str) -> None:
    # Replicas load their models at once on a shared machine: give them time.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not STOP.is_set():
        if proc.poll() is not None:
            raise DemoFailed(exited(name, proc))
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise DemoFailed(f"{name} was not ready on {url} within 90 s")


# -- what the demo measures --------------------------------------------------


@dataclass
class Exchange:
    kind: str  # "load" (u=7), "probe" (u=0) or "control" (a u=7 probe)
    request_id: str
    started: float
    ended: float = 0.0
    status: int | None = None
    served_by: str = ""
    error: str = ""


def replica_metrics(cluster: Cluster) -> dict[str, str]:
    out = {}
    for i in range(cluster.replicas):
        if cluster.procs[f"r{i}"].poll() is None:
            out[f"r{i}"] = httpx.get(cluster.replica_url(i) + "/metrics", timeout=5).text
    return out


def model_runs(metrics: dict[str, str], model: str) -> dict[str, float]:
    # Items the model ran, whatever the batch: one per input row.
    return {r: metric_sum(t, "rawserve_batch_size_sum", model=model) for r, t in metrics.items()}


async def predict(
    client: httpx.AsyncClient, url: str, row: list[float], urgency: int, request_id: str
) -> httpx.Response:
    return await client.post(
        url,
        json={"inputs": row},
        headers={"priority": f"u={urgency}", "x-demo-id": request_id},
    )


async def show_protocols(balancer: Balancer) -> dict[str, Any]:
    """One request on each of HAProxy's listeners: which HTTP version the
    client got, and that the replica behind answered."""
    out: dict[str, Any] = {}
    for name, url, verify in (
        ("h2c", balancer.url("/readyz"), True),
        ("tls", f"https://127.0.0.1:{balancer.tls_port}/readyz", False),
    ):
        # The development certificate is self-signed: this is a demo.
        async with httpx.AsyncClient(http1=name == "tls", http2=True, verify=verify) as c:
            r = await c.get(url, timeout=10)
        out[name] = {
            "http_version": r.http_version,
            "status": r.status_code,
            "served_by": r.headers.get("x-served-by"),
        }
    return out


async def cache_sharing(cluster: Cluster, balancer: Balancer, rng: random.Random) -> dict[str, Any]:
    url = balancer.url("/predict")
    before = model_runs(replica_metrics(cluster), cluster.model)
    row = random_row(rng, cluster.input_width)
    answers = []
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
        # Sequential, one per replica (round robin): each replica gets it once.
        for n in range(cluster.replicas):
            r = await predict(client, url, row, 3, f"cache-{n}")
            body = r.json()
            answers.append(
                {
                    "status": r.status_code,
                    "served_by": r.headers.get("x-served-by"),
                    "cache_status": r.headers.get("cache-status"),
                    "result": body.get("result"),
                    "prediction": body.get("prediction"),
                }
            )
    after = model_runs(replica_metrics(cluster), cluster.model)
    runs = {name: after[name] - before[name] for name in after}

    # The limit of sharing through Redis: two replicas asked at the same
    # instant both miss (each process single-flights only its own requests).
    twin = random_row(rng, cluster.input_width)
    before = model_runs(replica_metrics(cluster), cluster.model)
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
        await asyncio.gather(
            *(
                predict(client, cluster.replica_url(i) + "/predict", twin, 3, f"twin-{i}")
                for i in range(min(2, cluster.replicas))
            )
        )
    after = model_runs(replica_metrics(cluster), cluster.model)
    served_by = {a["served_by"] for a in answers}
    return {
        "answers": answers,
        "replicas_that_answered": len(served_by),
        "model_runs_by_replica": runs,
        "model_runs_total": sum(runs.values()),
        "same_result_path": len({a["result"] for a in answers}) == 1,
        "simultaneous_on_two_replicas_model_runs": sum(after.values()) - sum(before.values()),
    }


def urgency_waits(metrics: dict[str, str], replicas: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for u in ("0", "7"):
        count = sum(
            metric_sum(metrics[r], "rawserve_queue_wait_seconds_count", urgency=u) for r in replicas
        )
        total = sum(
            metric_sum(metrics[r], "rawserve_queue_wait_seconds_sum", urgency=u) for r in replicas
        )
        out[u] = {"count": count, "sum_s": total}
    return out


# HAProxy's "show stat" counters per server that the demo reads (see the
# management guide, section 9.1): streams handed to the server, answers by
# status class, retries on it and redispatches away from it, aborts.
COUNTERS = (
    "stot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other",
    "wretr", "wredis", "srv_abrt", "eresp",
)  # fmt: skip


def parse_haproxy_log(path: Path) -> list[dict[str, str]]:
    records = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("req="):
            continue
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        records.append(fields)
    return records


@dataclass
class _Stream:
    done: asyncio.Future[None]
    to_send: bytes | None  # None once END_STREAM is sent
    status: int | None = None
    served_by: str = ""
    error: str = ""


class H2Conn(asyncio.Protocol):
    """One h2c connection (prior knowledge) on python-hyper's h2, with no more
    than the load needs: POSTs with a body, the status and one header back,
    resets reported by their code. Lighter per request than httpx, so that
    on a small machine the replicas, not the load's own client, are what
    saturates (else the load's latency is the client's queue, in which no
    priority can help)."""

    def __init__(self, authority: str) -> None:
        self.authority = authority
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.closed = ""

    @classmethod
    async def open(cls, host: str, port: int) -> H2Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail_all(f"protocol error: {exc}")
            return
        for ev in events:
            stream = self.streams.get(getattr(ev, "stream_id", 0) or 0)
            if isinstance(ev, h2.events.ResponseReceived) and stream is not None:
                headers = dict(ev.headers)
                stream.status = int(headers[b":status"])
                stream.served_by = headers.get(b"x-served-by", b"").decode()
            elif isinstance(ev, h2.events.DataReceived):
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and stream is not None:
                self._finish(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset) and stream is not None:
                stream.error = f"reset {h2.errors.ErrorCodes(ev.error_code).name}"
                self._finish(ev.stream_id)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._fail_all(f"GOAWAY {ev.error_code!r}")
        self._pump()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all("connection lost")

    async def post(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> _Stream:
        if self.closed:
            return _Stream(asyncio.get_running_loop().create_future(), b"", error=self.closed)
        stream = _Stream(asyncio.get_running_loop().create_future(), body)
        sid = 0
        try:
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":authority", self.authority),
                    (":path", path),
                    ("content-type", "application/json"),
                    ("content-length", str(len(body))),
                    *headers,
                ],
            )
            self.streams[sid] = stream
            self._pump()
        except h2.exceptions.H2Error as exc:
            # The connection can no longer carry a new request (the peer
            # went away, too many streams): an error of this request only.
            stream.error = f"client: {type(exc).__name__}"
            self.streams.pop(sid, None)
            return stream
        self._flush()
        await stream.done
        return stream

    def _pump(self) -> None:
        # Request bodies go out as the peer's flow-control windows allow.
        for sid, stream in self.streams.items():
            if stream.to_send is None or stream.done.done():
                continue
            n = min(
                len(stream.to_send),
                self.h2.local_flow_control_window(sid),
                self.h2.max_outbound_frame_size,
            )
            if n <= 0:
                continue
            chunk, stream.to_send = stream.to_send[:n], stream.to_send[n:]
            end = not stream.to_send
            self.h2.send_data(sid, chunk, end_stream=end)
            if end:
                stream.to_send = None

    def _finish(self, sid: int) -> None:
        stream = self.streams.pop(sid)
        if not stream.done.done():
            stream.done.set_result(None)

    def _fail_all(self, why: str) -> None:
        self.closed = self.closed or why
        for sid in list(self.streams):
            self.streams[sid].error = self.streams[sid].error or why
            self._finish(sid)
        if self.transport is not None:
            self.transport.close()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = "closed by the client"
            with contextlib.suppress(Exception):
                self.h2.close_connection()
                self._flush()
            self.transport.close()


async def kill_under_load(
    cluster: Cluster, balancer: Balancer, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    victim = f"r{args.victim}"
    survivors = [f"r{i}" for i in range(cluster.replicas) if i != args.victim]
    metrics_before = replica_metrics(cluster)
    servers_before = balancer.server_states()
    exchanges: list[Exchange] = []
    counter = itertools.count()
    started = time.monotonic()
    stop = asyncio.Event()
    killed_at: list[float] = []
    issued = 0

    def should_stop() -> bool:
        return stop.is_set() or time.monotonic() - started >= args.seconds

    async def one(conn: H2Conn, kind: str, urgency: int) -> None:
        nonlocal issued
        if kind == "load":
            issued += 1
        ex = Exchange(kind, f"{kind}-{next(counter)}", time.monotonic())
        exchanges.append(ex)
        body = orjson.dumps({"inputs": random_row(rng, cluster.input_width)})
        got = await conn.post(
            "/predict", body, [("priority", f"u={urgency}"), ("x-demo-id", ex.request_id)]
        )
        ex.status, ex.served_by, ex.error = got.status, got.served_by, got.error
        if ex.error:
            ex.status = None
        ex.ended = time.monotonic()

    async def load_worker(conn: H2Conn) -> None:
        while not should_stop() and issued < args.requests:
            await one(conn, "load", 7)

    async def probe_worker(conn: H2Conn) -> None:
        # u=0 probes alternate with u=7 controls on the same connection: the
        # two differ only in their urgency, so the gap between them is what
        # the replicas' priorities are worth.
        for kind, urgency in itertools.cycle((("probe", 0), ("control", 7))):
            if should_stop():
                break
            await one(conn, kind, urgency)
            await asyncio.sleep(args.probe_gap_ms / 1000)

    async def killer() -> dict[str, Any]:
        # Halfway through, by time or by count, whichever comes first.
        while time.monotonic() - started < args.seconds / 2 and issued < args.requests / 2:
            await asyncio.sleep(0.01)
        # HAProxy's count of requests on the victim just before the kill
        # (scur: streams in progress on that server).
        scur = int(balancer.server_states()[victim]["scur"] or 0)
        cluster.procs[victim].send_signal(signal.SIGKILL)
        killed_at.append(time.monotonic())
        log(f"SIGKILL {victim} at {killed_at[0] - started:.2f} s, {issued} requests issued")
        down_after = await asyncio.to_thread(balancer.wait_status, victim, "DOWN", 15)
        return {"haproxy_scur_at_kill": scur, "marked_down_after_ms": _ms(down_after)}

    load_conns = [
        await H2Conn.open("127.0.0.1", balancer.h2c_port) for _ in range(args.connections)
    ]
    probe_conns = [await H2Conn.open("127.0.0.1", balancer.h2c_port) for _ in range(args.probers)]
    try:
        async with asyncio.timeout(args.seconds + 60), asyncio.TaskGroup() as tg:
            kill_task = tg.create_task(killer())
            for i in range(args.concurrency):
                tg.create_task(load_worker(load_conns[i % len(load_conns)]))
            for conn in probe_conns:
                tg.create_task(probe_worker(conn))
            # Probes go on until the load is done.
            while issued < args.requests and time.monotonic() - started < args.seconds:
                await asyncio.sleep(0.05)
            stop.set()
    finally:
        for conn in [*load_conns, *probe_conns]:
            conn.close()
    kill = kill_task.result()
    t_kill = killed_at[0]
    metrics_after = replica_metrics(cluster)

    # HAProxy's own account, from its per-server counters over the round:
    # requests it handed to a server (stot) that got no answer from it and
    # were not redispatched elsewhere (wredis) are the ones lost on it. (Its
    # log is no help here: a stream reset to the client as the backend
    # connection dies is counted but not always logged.)
    await asyncio.sleep(0.2)  # the last log lines
    servers_after = balancer.server_states()
    counters = {
        name: {
            key: int(servers_after[name][key] or 0) - int(servers_before[name][key] or 0)
            for key in COUNTERS
        }
        for name in servers_after
    }
    lost = {
        name: max(0, c["stot"] - sum(c[k] for k in COUNTERS if k.startswith("hrsp_")) - c["wredis"])
        for name, c in counters.items()
    }
    records = parse_haproxy_log(balancer.log)
    by_id = {r["req"]: r for r in records}

    def ok(ex: Exchange) -> bool:
        return ex.status == 200

    errors = [ex for ex in exchanges if not ok(ex)]

    def phase(kind: str, before: bool) -> dict[str, Any]:
        def in_phase(ex: Exchange) -> bool:
            return ex.ended < t_kill if before else ex.started > t_kill

        chosen = [ex for ex in exchanges if ex.kind == kind and ok(ex) and in_phase(ex)]
        return latency_summary([(ex.ended - ex.started) * 1000 for ex in chosen])

    after_kill = Counter(ex.served_by for ex in exchanges if ok(ex) and ex.started > t_kill)
    waits_before = urgency_waits(metrics_before, survivors)
    waits_after = urgency_waits(metrics_after, survivors)
    queue_wait = {}
    for u in ("0", "7"):
        n = waits_after[u]["count"] - waits_before[u]["count"]
        s = waits_after[u]["sum_s"] - waits_before[u]["sum_s"]
        queue_wait[f"u{u}"] = {"items": int(n), "mean_ms": round(s / n * 1000, 3) if n else None}
    return {
        "haproxy_l7_retries": balancer.l7_retries,
        "victim": victim,
        "killed_after_s": round(t_kill - started, 2),
        "duration_s": round(max(ex.ended for ex in exchanges) - started, 2),
        "requests": {
            "load_sent": sum(ex.kind == "load" for ex in exchanges),
            "probes_sent": sum(ex.kind == "probe" for ex in exchanges),
            "controls_sent": sum(ex.kind == "control" for ex in exchanges),
            "answered_200": sum(ok(ex) for ex in exchanges),
        },
        "client_errors": len(errors),
        "client_errors_by_kind": dict(Counter(error_kind(ex) for ex in errors)),
        "client_error_samples": [
            {
                "id": ex.request_id,
                "error": ex.error[:120] or f"status {ex.status}",
                "haproxy_log": by_id.get(ex.request_id),
            }
            for ex in errors[:5]
        ],
        "on_victim_when_it_died": lost[victim],
        "haproxy_counters_victim": counters[victim],
        **kill,
        "survivors_lost_requests": sum(n for name, n in lost.items() if name != victim),
        "haproxy_redispatches": int(servers_after[victim]["wredis"] or 0)
        - int(servers_before[victim]["wredis"] or 0),
        "answers_after_kill_by_replica": dict(after_kill),
        "latency_before_kill": {
            "probe_u0": phase("probe", True),
            "control_u7": phase("control", True),
            "load_u7": phase("load", True),
        },
        "latency_after_kill": {
            "probe_u0": phase("probe", False),
            "control_u7": phase("control", False),
            "load_u7": phase("load", False),
        },
        "survivors_queue_wait": queue_wait,
    }


# A stream HAProxy resets because the replica under it died: REFUSED_STREAM,
# the code that lets a client retry the request (RFC 9113, 8.7).
RESET_KINDS = ("reset REFUSED_STREAM",)


def error_kind(ex: Exchange) -> str:
    return ex.error or f"status {ex.status}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def checks(report: dict[str, Any], replicas: int) -> dict[str, bool]:
    cache, rejoined = report["cache"], report["rejoin"]
    out = {
        "model_ran_once_for_one_input_across_replicas": cache["model_runs_total"] == 1
        and cache["replicas_that_answered"] >= 2
        and cache["same_result_path"],
    }
    for n, kill in enumerate(report["kills"], 1):
        survivors = {f"r{i}" for i in range(replicas)} - {kill["victim"]}
        after = kill["answers_after_kill_by_replica"]
        # Every client error is a stream HAProxy reset because the replica
        # under it died, and there are no more of them than HAProxy counted
        # lost on the victim; the survivors lost nothing.
        out[f"round{n}_errors_bounded_by_requests_on_victim"] = (
            kill["client_errors"] <= kill["on_victim_when_it_died"]
            and set(kill["client_errors_by_kind"]) <= set(RESET_KINDS)
            and kill["survivors_lost_requests"] == 0
        )
        out[f"round{n}_survivors_took_the_traffic"] = (
            sum(after.get(s, 0) for s in survivors) > 0 and after.get(kill["victim"], 0) == 0
        )
        out[f"round{n}_victim_marked_down"] = kill["marked_down_after_ms"] is not None
    out["killed_replica_rejoined"] = (
        rejoined["up_in_haproxy_after_ms"] is not None
        and rejoined["answers_by_replica"].get(rejoined["replica"], 0) > 0
    )
    out["cleaned_up"] = report["cleanup"]["clean"]
    return out


async def rejoin(cluster: Cluster, balancer: Balancer, victim: int) -> dict[str, Any]:
    """The killed replica started again: how long until HAProxy sends it
    traffic, and that it then answers (from the shared cache too)."""
    name = f"r{victim}"
    started = time.monotonic()
    cluster.start_replica(victim)
    await asyncio.to_thread(wait_ready, cluster.replica_url(victim), cluster.procs[name], name)
    ready_s = time.monotonic() - started
    up_s = await asyncio.to_thread(balancer.wait_status, name, "UP", 30)
    served: Counter[str] = Counter()
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
        for n in range(4 * cluster.replicas):
            r = await client.get(balancer.url("/readyz"), headers={"x-demo-id": f"rejoin-{n}"})
            served[r.headers.get("x-served-by", "")] += r.status_code == 200
    return {
        "replica": name,
        "ready_after_ms": _ms(ready_s),
        "up_in_haproxy_after_ms": _ms(None if up_s is None else ready_s + up_s),
        "answers_by_replica": dict(served),
    }


async def demo(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    report: dict[str, Any] = {}
    # Round 1 behind a balancer that retries only failed connections (HAProxy's
    # default): what a kill costs, counted. Round 2 behind the template as it
    # is, with L7 retries: what they save.
    first = await asyncio.to_thread(cluster.start_haproxy, "haproxy-conn-retries", False)
    log(f"HAProxy up: h2c 127.0.0.1:{first.h2c_port}, TLS 127.0.0.1:{first.tls_port}")
    report["frontends"] = await show_protocols(first)
    log("cache sharing across replicas")
    report["cache"] = await cache_sharing(cluster, first, rng)
    rounds = []
    log(f"round 1: load for up to {args.seconds:g} s / {args.requests} requests, one kill")
    rounds.append(await kill_under_load(cluster, first, args, rng))
    log(f"r{args.victim} started again")
    report["rejoin"] = await rejoin(cluster, first, args.victim)
    first.proc.kill()
    second = await asyncio.to_thread(cluster.start_haproxy, "haproxy-l7-retries", True)
    log(f"round 2 (L7 retries): load for up to {args.seconds:g} s, one kill")
    rounds.append(await kill_under_load(cluster, second, args, rng))
    report["kills"] = rounds
    report["replica_requests_by_protocol"] = protocols_seen(replica_metrics(cluster))
    return report


def protocols_seen(metrics: dict[str, str]) -> dict[str, dict[str, float]]:
    """Requests the live replicas answered, by route and HTTP version: the
    predictions HAProxy forwarded and its /readyz checks arrive as HTTP/2."""
    out: dict[str, dict[str, float]] = {}
    for route in ("/predict", "/readyz"):
        for version in ("1.1", "2"):
            n = sum(
                metric_sum(t, "rawserve_requests_total", route=route, protocol=version)
                for t in metrics.values()
            )
            if n:
                out.setdefault(route, {})[f"HTTP/{version}"] = n
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=3, help="rawserve replicas, 2..8 (3)")
    p.add_argument(
        "--seconds", type=float, default=20.0, help="longest the load runs, per round (20)"
    )
    p.add_argument(
        "--requests", type=int, default=20000, help="most load requests sent, per round (20000)"
    )
    p.add_argument("--concurrency", type=int, default=32, help="u=7 requests in flight (32)")
    p.add_argument(
        "--connections", type=int, default=4, help="client h2 connections for the load (4)"
    )
    p.add_argument(
        "--probers",
        type=int,
        default=4,
        help="connections each sending u=0 probes and u=7 controls in turn, one at a time (4)",
    )
    p.add_argument("--probe-gap-ms", type=float, default=10.0, help="pause between probes (10)")
    p.add_argument("--victim", type=int, default=0, help="the replica to kill (0)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument(
        "--model",
        metavar="PATH",
        help="an ONNX model for the replicas to serve instead of the bundled digits "
        "(e.g. build/models/mlp.onnx from tools/make_models.py mlp)",
    )
    p.add_argument(
        "--backend-tls",
        action="store_true",
        help="HAProxy speaks h2 over TLS to the replicas (their port 8443) instead of h2c",
    )
    p.add_argument(
        "--replica-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for every replica's python -m rawserve (repeatable), "
        "e.g. --replica-arg=--max-batch-size=4",
    )
    p.add_argument(
        "--haproxy-cfg",
        default=str(TEMPLATE),
        help="the HAProxy configuration template to render (deploy/haproxy/haproxy.cfg)",
    )
    p.add_argument("--quick", action="store_true", help="2 replicas, 6 s, 600 requests")
    p.add_argument(
        "--keep-logs", metavar="DIR", help="keep every process's log and haproxy.cfg in DIR"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.replicas, args.seconds, args.requests = (
            2,
            min(args.seconds, 6.0),
            min(args.requests, 600),
        )
    if not 2 <= args.replicas <= MAX_REPLICAS:
        p.error(f"--replicas must be 2..{MAX_REPLICAS}: a kill needs a survivor")
    if not 0 < args.seconds <= MAX_SECONDS:
        p.error(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    if not 0 <= args.victim < args.replicas:
        p.error("--victim must name a replica (0..replicas-1)")
    if not 1 <= args.concurrency <= 256 or not 1 <= args.connections <= 32 or args.requests < 10:
        p.error("--concurrency 1..256, --connections 1..32, --requests at least 10")
    if not 1 <= args.probers <= 16:
        p.error("--probers 1..16")
    return args


# Set on Ctrl-C or SIGTERM: the waits running in threads give up at once, so
# that cleanup does not wait for them.
STOP = threading.Event()


def _raise_interrupt(signum: int, frame: Any) -> None:
    STOP.set()
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model and not Path(args.model).is_file():
        print(f"cluster_demo: cannot run: no model at {args.model}", file=sys.stderr)
        return 2
    if not Path(args.haproxy_cfg).is_file():
        print(
            f"cluster_demo: cannot run: no HAProxy template at {args.haproxy_cfg}", file=sys.stderr
        )
        return 2
    try:
        preflight()
    except (CannotRun, DemoFailed) as exc:
        print(f"cluster_demo: cannot run: {exc}", file=sys.stderr)
        return 2
    removed = remove_stale()
    if removed:
        log(f"removed leftovers of earlier runs: {', '.join(removed)}")
    # SIGTERM and SIGHUP take the same path as Ctrl-C: through cleanup.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="rawserve-cluster-"))
    cluster = Cluster(args.replicas, workdir, Path(args.haproxy_cfg))
    cluster.replica_args = list(args.replica_arg)
    cluster.backend_tls = args.backend_tls
    if args.model:
        cluster.model, cluster.model_path = Path(args.model).stem, str(Path(args.model).resolve())
    report: dict[str, Any] = {"replicas": args.replicas}
    status = 1
    try:
        log(f"network: bridge, {args.replicas} replica namespaces and one for Redis")
        cluster.build_network()
        cache_url = cluster.start_redis()
        log(f"starting {args.replicas} replicas (cache {cache_url})")
        cluster.start_replicas()
        report["haproxy"] = {
            "version": sh("haproxy", "-v").stdout.splitlines()[0],
            # Debian's build lists -QUIC: no HTTP/3 listener in front.
            "quic": "+QUIC" in sh("haproxy", "-vv").stdout,
        }
        bound = 180 + 2 * args.seconds + 30 * args.replicas
        report.update(asyncio.run(asyncio.wait_for(demo(cluster, args), bound)))
        status = 0
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        status = 130
    except (DemoFailed, TimeoutError, OSError, httpx.HTTPError) as exc:
        where = args.keep_logs or "gone with the run: --keep-logs DIR keeps them"
        log(f"failed: {type(exc).__name__}: {exc} (logs: {where})")
        if os.environ.get("CLUSTER_DEMO_TRACE"):
            import traceback

            traceback.print_exc()
        report["failure"] = str(exc)
        status = 1
    finally:
        # Ignore a second Ctrl-C while taking things down.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        report["cleanup"] = cluster.cleanup()
        if args.keep_logs:
            keep = shutil.ignore_patterns("*.sock", "*.pem")
            shutil.copytree(workdir, args.keep_logs, ignore=keep, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if status == 0:
        report["checks"] = checks(report, args.replicas)
        report["ok"] = all(report["checks"].values())
        status = 0 if report["ok"] else 1
    print(json.dumps(report, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
