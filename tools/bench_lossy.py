"""HTTP/2 over TLS against HTTP/3 under random packet loss, rawserve and
FastAPI on hypercorn side by side (issue 12 item 7).

    python tools/bench_lossy.py                          # 0, 1, 2, 5 % loss; writes
                                                         # docs/BENCHMARKS.md and docs/img/
    python tools/bench_lossy.py --loss 0,5 --requests 1000 --rounds 1 --servers rawserve

Needs root (network namespaces, nftables), ``ip`` (iproute2), ``nft``
(Debian ``nftables``), ``h2load`` and ``curl``; it says which is missing and
exits with 2 when it cannot run. The peers come from ``.venv-bench`` (see
tools/bench.py).

The network: two namespaces of this run's own, the server's and the
client's, joined by a veth pair. In each, an nftables input chain drops
``numgen random mod 100 < N`` of the packets arriving on the veth, so each
direction loses N % (this kernel has no netem). Drops are made on arrival,
where packets are single: GSO is off on both veth ends (``gso_max_segs 1``),
or one drop would take a whole UDP GSO batch or TSO burst: the output hook
sees them before segmentation, and veth hands them over unsegmented (one
``sendmsg`` of 20 datagrams with ``UDP_SEGMENT`` is 1 packet at the
receiver's input hook by default, 20 with ``gso_max_segs 1``). Nothing is
added to the host's own network or ruleset.

Each run: one connection, ``--streams`` (16) requests in flight, ``--requests``
digits ``POST /predict`` (JSON in and out), by h2load (h2 over TLS) or
tools/h3load.py (HTTP/3, aioquic: the same client for both servers), both run
in the client namespace on ``--client-cpu``; the servers on ``--server-cpu``.
Latency is per request, from sending to the whole answer. Rounds go over
every loss level and every (server, protocol), in an order rotated each
round; p50 and p99 are over the requests of every round together. The nft
counters give the packets actually dropped. Bounded: every client run has a
timeout and the whole run a deadline (``--deadline``); the namespaces and
servers are removed at the end, whatever happens (SIGTERM and Ctrl-C
included).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench  # tools/bench.py: the same peers, certificates, body and document writer

ROOT = bench.ROOT
H3LOAD = ROOT / "tools" / "h3load.py"
BEGIN = "<!-- tools/bench_lossy.py: begin (generated; edit the tool, not this) -->"
END = "<!-- tools/bench_lossy.py: end -->"
SERVERS = ("rawserve", "hypercorn")
PROTOCOLS = {"h2": "h2 over TLS", "h3": "HTTP/3"}
LABELS = {"rawserve": "rawserve", "hypercorn": "FastAPI on hypercorn"}
# TLS and UDP port of each server inside the server namespace (nothing else
# runs there); both servers run for the whole benchmark.
PORTS = {"rawserve": 8443, "hypercorn": 9443}


class CannotRun(Exception):
    """This machine or user cannot run the benchmark; the message says why."""


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")
    return done


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def preflight(args: argparse.Namespace) -> None:
    """Every reason this cannot run, at once, before touching anything."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (it creates network namespaces and nftables rules)")
    for binary, package in (("ip", "iproute2"), ("nft", "nftables"), ("h2load", "nghttp2-client"),
                            ("curl", "curl")):  # fmt: skip
        if shutil.which(binary) is None:
            problems.append(f"{binary} not found (Debian: apt-get install {package})")
    if "hypercorn" in args.servers and not (Path(args.peer_venv) / "bin" / "hypercorn").exists():
        problems.append(
            f"hypercorn not in {args.peer_venv} (python3 -m venv .venv-bench && "
            ".venv-bench/bin/pip install -e '.[bench]')"
        )
    if not problems:
        probe = f"rslprobe{os.getpid()}"
        done = sh("ip", "netns", "add", probe, check=False)
        if done.returncode != 0:
            problems.append(
                f"cannot create network namespaces (ip netns add: {done.stderr.strip()})"
            )
        else:
            nft = sh("ip", "netns", "exec", probe, "nft", "add", "table", "inet", "t", check=False)
            if nft.returncode != 0:
                problems.append(f"nft cannot add a table: {nft.stderr.strip()}")
            sh("ip", "netns", "del", probe, check=False)
    if problems:
        raise CannotRun("; ".join(problems))


# -- the network ------------------------------------------------------------------------


@dataclass
class Net:
    """Two namespaces (server, client) joined by a veth pair, each dropping
    a share of what arrives on it."""

    name: str
    direction: str = "both"  # which way packets are dropped: both, to-server, to-client
    server_ns: str = ""
    client_ns: str = ""
    server_ip: str = ""
    client_ip: str = ""
    made: list[str] = field(default_factory=list)  # namespaces to delete

    def __post_init__(self) -> None:
        self.server_ns, self.client_ns = f"{self.name}-s", f"{self.name}-c"

    def setup(self) -> None:
        subnet = free_subnet()
        self.server_ip, self.client_ip = f"{subnet}.2", f"{subnet}.1"
        for ns in (self.server_ns, self.client_ns):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.server_ns, "link", "add", "veths", "type", "veth", "peer", "name",
           "vethc", "netns", self.client_ns)  # fmt: skip
        for ns, dev, ip in (
            (self.server_ns, "veths", self.server_ip),
            (self.client_ns, "vethc", self.client_ip),
        ):
            # Segment before the veth: one drop is one packet, not a GSO batch.
            sh("ip", "-n", ns, "link", "set", dev, "gso_max_segs", "1")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            rules = (
                "table inet lossy {\n  chain input {\n"
                "    type filter hook input priority 0; policy accept;\n  }\n}\n"
            )
            nft(ns, rules)
        self.set_loss(0)

    def set_loss(self, percent: int) -> None:
        for ns, dev in ((self.server_ns, "veths"), (self.client_ns, "vethc")):
            towards = "to-server" if ns == self.server_ns else "to-client"
            share = percent if self.direction in ("both", towards) else 0
            rule = f'iifname "{dev}" numgen random mod 100 < {share} counter drop'
            nft(
                ns,
                "flush chain inet lossy input\n"
                + (f"add rule inet lossy input {rule}\n" if share else ""),
            )

    def dropped(self) -> int:
        """Packets dropped since the last set_loss, both ways."""
        total = 0
        for ns in (self.server_ns, self.client_ns):
            out = sh(
                "ip", "netns", "exec", ns, "nft", "-j", "list", "chain", "inet", "lossy", "input"
            )
            for item in json.loads(out.stdout)["nftables"]:
                for expr in item.get("rule", {}).get("expr", []):
                    if "counter" in expr:
                        total += int(expr["counter"]["packets"])
        return total

    def exec(self, ns: str, argv: Sequence[str], cpu: str | None) -> list[str]:
        cmd = ["ip", "netns", "exec", ns]
        if cpu is not None:
            cmd += ["taskset", "-c", cpu]
        return [*cmd, *argv]

    def cleanup(self) -> list[str]:
        """Kill what runs in the namespaces and delete them (the veth pair
        goes with them); what is left, if anything."""
        for ns in self.made:
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
        left = [ns for ns in self.made if ns in namespaces()]
        self.made = left
        return left


def nft(ns: str, script: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True,
                          capture_output=True, timeout=30)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"nft in {ns}: {done.stderr.strip()}\n{script}")


def namespaces() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line]


def free_subnet() -> str:
    """A 10.214.K.0/30 no interface here uses (another tool may hold one)."""
    used = sh("ip", "-o", "addr").stdout
    for ns in namespaces():
        used += sh("ip", "-n", ns, "-o", "addr", check=False).stdout
    start = os.getpid() % 250
    for k in range(250):
        prefix = f"10.214.{(start + k) % 250 + 1}"
        if f" {prefix}." not in used:
            return prefix
    raise CannotRun("no free 10.214.K.0/30 subnet")


# -- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def server_command(name: str, args: argparse.Namespace, net: Net, workdir: Path) -> list[str]:
    host = net.server_ip
    if name == "rawserve":
        cmd = [args.rawserve_python, "-m", "rawserve", "--host", host, "--http-port", "-1"]
        cmd += ["--port", str(PORTS[name]), "--quic-port", str(PORTS[name]), "--no-cache"]
        cmd += ["--certfile", str(bench.CERT), "--keyfile", str(bench.KEY)]
        cmd += ["--log-level", "warning", "--no-access-log", *args.rawserve_arg]
        if bench.has_module(args.rawserve_python, "uvloop"):
            cmd += ["--loop", "uvloop"]
        return cmd
    config = workdir / "hypercorn.toml"
    config.write_text("keep_alive_max_requests = 100000000\n")  # else it closes after 1,000
    cmd = [str(Path(args.peer_venv) / "bin" / "hypercorn"), "--config", str(config)]
    cmd += ["--worker-class", "uvloop", "--bind", f"{host}:{PORTS[name]}"]
    cmd += ["--quic-bind", f"{host}:{PORTS[name]}", "--certfile", str(bench.CERT)]
    cmd += ["--keyfile", str(bench.KEY), "--log-level", "warning", "fastapi_app:app"]
    return cmd


@contextlib.contextmanager
def serving(name: str, args: argparse.Namespace, net: Net, workdir: Path) -> Iterator[Server]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(args.rawserve_src), str(bench.PEERS), env.get("PYTHONPATH")) if p
    )
    log_path = workdir / f"{name}.log"
    cmd = net.exec(net.server_ns, server_command(name, args, net, workdir), args.server_cpu)
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=args.rawserve_src, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = Server(name, process, log_path)
    try:
        wait_ready(server, net, args.ready_timeout)
        yield server
    finally:
        bench.stop(process)


def curl(
    net: Net, server: str, path: str, body: bytes | None = None, timeout: float = 5
) -> tuple[int, bytes]:
    url = f"https://{net.server_ip}:{PORTS[server]}{path}"
    cmd = ["curl", "-sk", "--http2", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
    if body is not None:
        cmd += ["-H", "content-type: application/json", "--data-binary", "@-"]
    done = subprocess.run(net.exec(net.client_ns, [*cmd, url], None), input=body or b"",
                          capture_output=True, timeout=timeout + 10)  # fmt: skip
    data, _, status = done.stdout.rpartition(b"\n")
    return (int(status) if status.isdigit() else 0), data


def wait_ready(server: Server, net: Net, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}; log:\n"
                f"{server.log.read_text(errors='replace')[-2000:]}"
            )
        if curl(net, server.name, "/healthz", timeout=1)[0] == 200:
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"{server.name} not ready after {timeout_s} s: {server.log.read_text()[-2000:]}"
    )


# -- clients ---------------------------------------------------------------------------


@dataclass
class Run:
    latencies_ms: list[float]
    seconds: float
    answered: int
    errors: int  # failed, timed out or non-2xx
    dropped: int  # packets the nft rules dropped during the run, both ways
    note: str = ""

    @property
    def rps(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


def run_h2(net: Net, server: str, args: argparse.Namespace, body: Path, workdir: Path) -> Run:
    log_file = workdir / "h2load.log"
    log_file.unlink(missing_ok=True)
    url = f"https://{net.server_ip}:{PORTS[server]}/predict"
    cmd = ["h2load", f"--log-file={log_file}", "-n", str(args.requests), "-c", "1"]
    cmd += ["-m", str(args.streams), "-d", str(body), "-H", "content-type: application/json", url]
    try:
        done = subprocess.run(net.exec(net.client_ns, cmd, args.client_cpu), capture_output=True,
                              text=True, timeout=args.run_timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return Run([], 0.0, 0, args.requests, 0, f"h2load timed out ({args.run_timeout} s)")
    got = bench.parse_h2load(done.stdout + done.stderr, log_file, args.requests)
    note = got.note
    if got.protocol and got.protocol != "h2":
        note = f"spoke {got.protocol}, not h2"
    # h2load's "failed" already includes its "errored" and non-2xx answers:
    # every request not answered 2xx is one error, counted once.
    answered = got.codes[0] if not note.startswith("spoke") else 0
    return Run(got.latencies_ms, got.seconds, answered, args.requests - answered, 0, note)


def run_h3(net: Net, server: str, args: argparse.Namespace, body: Path) -> Run:
    cmd = [sys.executable, str(H3LOAD), str(PORTS[server]), "--host", net.server_ip, "--json"]
    cmd += ["-n", str(args.requests), "-c", str(args.streams), "--warm-up", "20"]
    cmd += ["--body", str(body), "--deadline", str(args.run_timeout)]
    cmd += ["--timeout", str(args.request_timeout)]
    try:
        done = subprocess.run(net.exec(net.client_ns, cmd, args.client_cpu), capture_output=True,
                              text=True, timeout=args.run_timeout + 30)  # fmt: skip
        got = json.loads(done.stdout)
    except (subprocess.TimeoutExpired, ValueError):
        return Run([], 0.0, 0, args.requests, 0, "h3load gave no result")
    answered = got["answered"] - got["non_2xx"]  # 2xx only, as for h2
    return Run(got["latencies_ms"], got["seconds"], answered, args.requests - answered, 0,
               got["note"])  # fmt: skip


# -- the benchmark ------------------------------------------------------------------------


def check_answers(net: Net, args: argparse.Namespace, body: Path) -> None:
    """Every server answers the digits row over h2 and HTTP/3, before any figure."""
    for name in args.servers:
        status, data = curl(net, name, "/predict", body.read_bytes())
        cmd = [sys.executable, str(H3LOAD), str(PORTS[name]), "--host", net.server_ip, "--once"]
        once = subprocess.run(net.exec(net.client_ns, [*cmd, "--body", str(body)], None),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if status != 200 or '"status": 200' not in once.stdout:
            raise RuntimeError(
                f"{name}: h2 answered {status} {data[:200]!r}; HTTP/3: {once.stdout[:300]}"
            )
        log(f"   {name} answers over h2 and HTTP/3: {data.decode(errors='replace')[:120]}")


def measure(args: argparse.Namespace, net: Net, workdir: Path) -> dict[str, Any]:
    body = workdir / "body.json"
    body.write_bytes(bench.MODELS["digits"].body())
    cells = [(s, p) for s in args.servers for p in args.protocols]
    runs: dict[tuple[str, str, int], list[Run]] = {
        (s, p, n): [] for s, p in cells for n in args.loss
    }
    deadline = time.monotonic() + args.deadline
    incomplete = ""
    with contextlib.ExitStack() as stack:
        for name in args.servers:
            stack.enter_context(serving(name, args, net, workdir))
        check_answers(net, args, body)
        plan = []
        for round_ in range(args.rounds):
            for k, loss in enumerate(args.loss):
                shift = (round_ + k) % len(cells)
                plan += [(round_, loss, cell) for cell in cells[shift:] + cells[:shift]]
        for round_, loss, (server, protocol) in plan:
            if time.monotonic() > deadline:
                incomplete = f"deadline ({args.deadline:g} s) reached in round {round_ + 1}"
                log(f"   {incomplete}: stopping here")
                break
            net.set_loss(loss)  # also zeroes the drop counters
            if protocol == "h2":
                got = run_h2(net, server, args, body, workdir)
            else:
                got = run_h3(net, server, args, body)
            got.dropped = net.dropped()
            runs[(server, protocol, loss)].append(got)
            log(
                f"   round {round_ + 1} loss {loss}% {server:9} {protocol}: {got.answered} "
                f"answered, {got.errors} errors, {got.rps:6.0f} req/s, p50 "
                f"{bench.percentile(got.latencies_ms, 50):8.2f} p99 "
                f"{bench.percentile(got.latencies_ms, 99):8.2f} ms, {got.dropped} packets "
                f"dropped {got.note}"
            )
        net.set_loss(0)
    rows = []
    for (server, protocol, loss), done in runs.items():
        # A request never answered is slower than any answered one: leaving
        # it out would flatter the percentiles of the server that lost it.
        latencies = [v for r in done for v in r.latencies_ms]
        latencies += [math.inf] * sum(r.errors for r in done)
        rows.append(
            {
                "server": server,
                "protocol": protocol,
                "loss": loss,
                "runs": len(done),
                "answered": sum(r.answered for r in done),
                "errors": sum(r.errors for r in done),
                "dropped": sum(r.dropped for r in done),
                "p50_ms": bench.percentile(latencies, 50),
                "p99_ms": bench.percentile(latencies, 99),
                "max_ms": max(latencies) if latencies else math.nan,
                "answered_p99_ms": bench.percentile([v for r in done for v in r.latencies_ms], 99),
                "rps": statistics.median(r.rps for r in done) if done else math.nan,
                "notes": sorted({r.note for r in done if r.note}),
            }
        )
    return {"rows": rows, "incomplete": incomplete}


def row(report: dict[str, Any], server: str, protocol: str, loss: int) -> dict[str, Any]:
    return next(
        (
            r
            for r in report["rows"]
            if (r["server"], r["protocol"], r["loss"]) == (server, protocol, loss)
        ),
        {},
    )


def judge(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's targets: rawserve's HTTP/3 p99 at 5 % loss at or below
    hypercorn's, and below rawserve's own h2 p99 from 2 % on."""
    out = []
    mine5 = row(report, "rawserve", "h3", 5).get("p99_ms", math.nan)
    # Failed requests count as infinitely slow (see measure): a server that
    # loses requests cannot meet a latency target by answering the rest fast.
    peer5 = row(report, "hypercorn", "h3", 5).get("p99_ms", math.nan)
    if not (math.isnan(mine5) or math.isnan(peer5)):
        out.append(
            {
                "target": "rawserve HTTP/3 p99 at 5 % loss at or below hypercorn's HTTP/3 p99",
                "figure": f"{ms(mine5)} vs {ms(peer5)}",
                "met": mine5 <= peer5,
            }
        )
    for loss in (n for n in report["loss"] if n >= 2):
        h3 = row(report, "rawserve", "h3", loss).get("p99_ms", math.nan)
        h2 = row(report, "rawserve", "h2", loss).get("p99_ms", math.nan)
        if not (math.isnan(h3) or math.isnan(h2)):
            out.append(
                {
                    "target": f"rawserve HTTP/3 p99 below its h2 p99 at {loss} % loss",
                    "figure": f"{ms(h3)} vs {ms(h2)}",
                    "met": h3 < h2,
                }
            )
    return out


def ms(value: float, digits: int = 1) -> str:
    if math.isinf(value):
        return "∞ (requests lost)"
    return f"{bench.fmt(value, digits)} ms"


def cell_ms(value: float, digits: int = 2) -> str:
    return "∞" if math.isinf(value) else bench.fmt(value, digits)


def markdown(report: dict[str, Any], image: str | None) -> str:
    m = report["machine"]
    out = [
        BEGIN,
        "",
        "### HTTP/2 and HTTP/3 under packet loss (tools/bench_lossy.py)"
        + (" — SMOKE RUN, not a measurement" if m["smoke"] else ""),
        "",
        f"Run {m['date']}: `{m['command']}`",
        "",
        f"- Machine: {m['cpus']} CPUs ({m['cpu']}), {m['kernel']}; load average at the end "
        f"{', '.join(f'{v:.2f}' for v in m['load'])}"
        + (" (a busy machine: other work shared the cores)" if m["load"][0] > 2.5 else "")
        + ".",
        f"- rawserve commit {m['commit']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ".",
        (
            f"- Servers on CPU {m['server_cpu']}, clients on CPU {m['client_cpu']} (taskset), in "
            if m["server_cpu"] is not None
            else "- Servers and clients unpinned, in "
        )
        + "network namespaces of their own joined by a veth pair; each side drops N % of the "
        "packets arriving on it (nftables `numgen random mod 100 < N drop`, GSO off on the veth "
        "so that a drop is one packet). No added delay: the loopback-like RTT is tens of µs, so "
        "what loss costs here is recovery time (TCP's 200 ms minimum RTO, QUIC's PTO), not RTTs.",
        f"- Per run: one connection, {report['streams']} requests in flight, "
        f"{report['requests']:,} digits `POST /predict`; h2 by h2load, HTTP/3 by "
        "tools/h3load.py (aioquic, the same for both servers). "
        f"{report['rounds']} rounds over every loss level and cell, order rotated; percentiles "
        "over the requests of all rounds, a request never answered (HTTP/3: after "
        f"{report['request_timeout']:g} s) counting as infinitely slow (∞).",
        "",
    ]
    if report["incomplete"]:
        out += [f"**Incomplete:** {report['incomplete']}.", ""]
    verdicts = judge(report)
    if verdicts:
        out += ["| target (issue 12) | figure | met |", "|---|---|---|"]
        out += [
            f"| {v['target']} | {v['figure']} | {'yes' if v['met'] else 'no'} |" for v in verdicts
        ]
        out.append("")
    out += [
        "| server | protocol | loss | p50 ms | p99 ms | p99 of the answered ms | req/s | "
        "answered | errors | packets dropped |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {s: i for i, s in enumerate(SERVERS)}
    for r in sorted(report["rows"], key=lambda r: (r["loss"], order[r["server"]], r["protocol"])):
        out.append(
            f"| {LABELS[r['server']]} | {PROTOCOLS[r['protocol']]} | {r['loss']} % | "
            f"{cell_ms(r['p50_ms'])} | {cell_ms(r['p99_ms'])} | "
            f"{cell_ms(r['answered_p99_ms'])} | {bench.fmt(r['rps'])} | {r['answered']:,} | "
            f"{r['errors']:,} | {r['dropped']:,} |"
        )
    out.append("")
    if image:
        out += [f"![p50 and p99 against packet loss]({image})", ""]
    notes = sorted({n for r in report["rows"] for n in r["notes"]})
    if notes:
        out += ["Client notes: " + "; ".join(notes), ""]
    out.append(END)
    return "\n".join(out) + "\n"


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("   matplotlib not installed: no plot")
        return False
    fig, ax = plt.subplots(figsize=(10, 4.8))
    finite = [r[k] for r in report["rows"] for k in ("p50_ms", "p99_ms") if math.isfinite(r[k])]
    # A percentile that fell on a lost request is drawn as an x above the rest.
    lost_at = max(finite, default=1.0) * 2
    lost_label: str | None = "requests lost: percentile unbounded"
    for i, (server, protocol) in enumerate(
        (s, p) for s in SERVERS for p in PROTOCOLS if s in report["servers"]
    ):
        rows = sorted(
            (r for r in report["rows"] if (r["server"], r["protocol"]) == (server, protocol)),
            key=lambda r: r["loss"],
        )
        rows = [r for r in rows if r["runs"] and not math.isnan(r["p99_ms"])]
        if not rows:
            continue
        losses = [r["loss"] for r in rows]
        style = "-" if protocol == "h3" else "--"
        color = f"C{i}"
        label = f"{LABELS[server]}, {PROTOCOLS[protocol]}"
        for key, marker, alpha in (("p99_ms", "o", 1.0), ("p50_ms", ".", 0.4)):
            values = [r[key] if math.isfinite(r[key]) else lost_at for r in rows]
            ax.plot(losses, values, style, marker=marker, color=color, alpha=alpha,
                    label=f"{label}: {key[:3]}")  # fmt: skip
            lost = [(x, lost_at) for x, r in zip(losses, rows, strict=True) if math.isinf(r[key])]
            if lost:
                ax.scatter(*zip(*lost, strict=True), marker="x", s=80, color="red", zorder=3,
                           label=lost_label)  # fmt: skip
                lost_label = None
    ax.set_yscale("log")
    ax.set_xlabel("packets dropped each way, %")
    ax.set_ylabel("request latency, ms (log)")
    ax.set_xticks(report["loss"])
    ax.set_title(f"Digits, one connection, {report['streams']} requests in flight")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside, not over, the lines
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def machine(args: argparse.Namespace) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rev = args.rawserve_commit or "HEAD"
    commit = sh("git", "-C", str(ROOT), "rev-parse", "--short", rev, check=False).stdout.strip()
    versions = bench.versions(args.rawserve_python, ("aioquic", "h2"))
    if "hypercorn" in args.servers:
        peer = bench.versions(str(Path(args.peer_venv) / "bin" / "python"), ("hypercorn",))
        versions |= {f"{k} (peer)": v for k, v in peer.items()}
    versions["h2load"] = sh("h2load", "--version", check=False).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python tools/bench_lossy.py " + " ".join(args.argv),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "commit": commit + ("" if args.rawserve_commit else " (work tree)"),
        "versions": versions,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "load": os.getloadavg(),
        "smoke": args.smoke,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])

    def items(choices: Sequence[str]) -> Any:
        def parse(text: str) -> list[str]:
            got = [t.strip() for t in text.split(",") if t.strip()]
            if not got or any(t not in choices for t in got):
                raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
            return got

        return parse

    def losses(text: str) -> list[int]:
        try:
            got = sorted({int(t) for t in text.split(",") if t.strip()})
        except ValueError:
            raise argparse.ArgumentTypeError("percentages, e.g. 0,1,2,5") from None
        if not got or any(not 0 <= n <= 50 for n in got):
            raise argparse.ArgumentTypeError("percentages from 0 to 50")
        return got

    parser.add_argument("--loss", type=losses, default=[0, 1, 2, 5], help="%% each way (0,1,2,5)")
    parser.add_argument("--servers", type=items(SERVERS), default=list(SERVERS))
    parser.add_argument("--protocols", type=items(tuple(PROTOCOLS)), default=list(PROTOCOLS))
    parser.add_argument("--requests", type=int, default=2000, help="per run (2000)")
    parser.add_argument("--streams", type=int, default=16, help="in flight on the connection (16)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run-timeout", type=float, default=120.0, help="seconds per client run")
    parser.add_argument("--deadline", type=float, default=1200.0, help="seconds for all runs")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds an HTTP/3 request may take before it counts as failed (30)",
    )
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--server-cpu", default="0", help="taskset CPU list for servers (0)")
    parser.add_argument("--client-cpu", default="1", help="taskset CPU list for clients (1)")
    parser.add_argument("--no-pin", action="store_true", help="no taskset")
    parser.add_argument("--rawserve-python", default=sys.executable)
    parser.add_argument("--peer-venv", default=str(bench.BENCH_VENV))
    parser.add_argument("--rawserve-commit", metavar="REV", help="serve rawserve/ as committed")
    parser.add_argument(
        "--rawserve-arg", action="append", default=[], help="extra rawserve argument"
    )
    parser.add_argument("--name", help="namespace prefix (default rsloss<pid>)")
    parser.add_argument(
        "--direction",
        choices=("both", "to-server", "to-client"),
        default="both",
        help="drop both ways (the benchmark) or one way only (to find which way hurts)",
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--doc", type=Path, help="write the table here (default docs/BENCHMARKS.md unless --smoke)"
    )
    parser.add_argument("--img-dir", type=Path, help="the plot here (default docs/img)")
    parser.add_argument(
        "--smoke", action="store_true", help="a check that it works, not a measurement"
    )
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if not args.smoke:
        args.doc = args.doc or bench.DOC
        args.img_dir = args.img_dir or bench.IMG
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    args.name = args.name or f"rsloss{os.getpid()}"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preflight(args)
    except CannotRun as exc:
        log(f"bench_lossy cannot run: {exc}")
        return 2

    def terminate(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt  # the finally below removes the namespaces

    signal.signal(signal.SIGTERM, terminate)
    net = Net(args.name, args.direction)
    log(f"namespaces {net.server_ns} (servers) and {net.client_ns} (clients)")
    with tempfile.TemporaryDirectory(prefix="rawserve-lossy-") as tmp:
        workdir = Path(tmp)
        args.rawserve_src = ROOT
        if args.rawserve_commit:
            # rawserve as committed, not the work tree (others may be editing it).
            args.rawserve_src = workdir / "src"
            args.rawserve_src.mkdir()
            archive = sh_bytes("git", "-C", str(ROOT), "archive", args.rawserve_commit, "rawserve")
            subprocess.run(["tar", "-x", "-C", str(args.rawserve_src)], input=archive, check=True)
        try:
            net.setup()
            result = measure(args, net, workdir)
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            log(f"bench_lossy failed: {exc}")
            return 1
        finally:
            left = net.cleanup()
            if left:
                log(f"could not delete namespaces {', '.join(left)}: ip netns del them by hand")
            else:
                log("namespaces removed")
    report: dict[str, Any] = {
        **result,
        "loss": args.loss,
        "servers": args.servers,
        "protocols": args.protocols,
        "streams": args.streams,
        "requests": args.requests,
        "request_timeout": args.request_timeout,
        "rounds": args.rounds,
        "namespaces": [net.server_ns, net.client_ns],
        "machine": machine(args),
    }
    report["targets"] = judge(report)
    image = None
    if args.img_dir and plot(report, args.img_dir / "bench-lossy.png"):
        where = args.doc.parent if args.doc else Path.cwd()
        image = os.path.relpath(args.img_dir / "bench-lossy.png", where)
    text = markdown(report, image)
    if args.doc:
        bench.write_doc(args.doc, text, BEGIN, END)
        log(f"wrote {args.doc}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    print(text)
    failed = result["incomplete"] or any(r["errors"] or not r["runs"] for r in result["rows"])
    return 1 if failed else 0


def sh_bytes(*argv: str) -> bytes:
    return subprocess.run(argv, capture_output=True, check=True).stdout


if __name__ == "__main__":
    sys.exit(main())
