"""``python -m rawserve --workers N``: real processes on real sockets.

HTTP/1.1 and HTTP/2 connections spread over the workers; an HTTP/3
connection survives its client changing source port (the kernel then hands
its datagrams to another worker, which forwards them to the owner); a worker
killed with SIGKILL is replaced and the server keeps answering; SIGTERM
drains every worker and exits 0. Which worker answered is read from
``/metrics``, where every worker's series carry a ``worker`` label whichever
worker the scrape reaches."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rawserve.inference.metrics import Registry
from rawserve.serving.quic import pack_forwarded, unpack_forwarded
from tests.h3client import H3Client, h3_connect

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60


class Served:
    """``python -m rawserve`` in a subprocess; its stderr collected by a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rawserve",
                "--host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--port",
                "0",
                "--certs-dir",
                str(ROOT / "certs"),
                *args,
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = predicate(self.lines)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError("not seen on stderr:\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.5))

    def ready(self) -> None:
        self.wait_for(lambda lines: any("workers (pids" in line for line in lines), READY_TIMEOUT_S)
        text = "\n".join(self.lines)
        self.http_port = int(re.search(r"http://127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        self.https_port = int(re.search(r"https://127\.0\.0\.1:(\d+)  \(HTTP/1", text).group(1))  # type: ignore[union-attr]
        self.quic_port = int(re.search(r"https://127\.0\.0\.1:(\d+)  \(HTTP/3", text).group(1))  # type: ignore[union-attr]
        pids = re.search(r"workers \(pids ([\d, ]+)\)", text).group(1)  # type: ignore[union-attr]
        self.pids = [int(p) for p in pids.split(", ")]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self) -> None:
        """Every worker's models warmed up: /readyz answers 200 on new
        connections (each may reach either worker) a few times in a row."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        streak = 0
        while streak < 10:
            assert time.monotonic() < deadline, "never ready"
            with httpx.Client() as c:
                ok = c.get(f"{self.url}/readyz").status_code == 200
            streak = streak + 1 if ok else 0
            if not ok:
                time.sleep(0.05)

    def metric(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """One family from /metrics: labels -> value, every worker's."""
        text = httpx.get(f"{self.url}/metrics").text
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for line in text.splitlines():
            m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
            if m:
                labels = tuple(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
                out[labels] = float(m.group(2))
        return out

    def per_worker(self, name: str, **match: str) -> dict[str, float]:
        totals: dict[str, float] = {}
        for labels, value in self.metric(name).items():
            d = dict(labels)
            if all(d.get(k) == v for k, v in match.items()):
                totals[d["worker"]] = totals.get(d["worker"], 0) + value
        return totals

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)


@pytest.fixture(scope="module")
def two() -> Iterator[Served]:
    served = Served("--workers", "2", "--no-cache")
    try:
        served.ready()
        served.wait_ready()
        yield served
    finally:
        if served.proc.poll() is None:
            served.stop()
        if served.proc.poll() is None:
            served.proc.kill()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_http11_connections_spread_over_both_workers(two: Served) -> None:
    for _ in range(30):
        with httpx.Client() as c:  # a new connection, a new source port
            assert c.get(f"{two.url}/healthz").status_code == 200
    # Published once a second by each worker: wait for both to show.
    counts = wait_until(
        lambda: (
            (t := two.per_worker("rawserve_requests_total", protocol="1.1", route="/healthz"))
            and len(t) == 2
            and sum(t.values()) >= 30
            and t
        ),
        "both workers answering /healthz",
    )
    assert set(counts) == {"0", "1"}
    assert all(n > 0 for n in counts.values())


def test_h2_connections_spread_over_both_workers(two: Served) -> None:
    body = {"inputs": [[0.0] * 64]}
    for _ in range(20):
        with httpx.Client(http2=True, verify=False) as c:
            r = c.post(f"https://127.0.0.1:{two.https_port}/predict", json=body)
            assert r.status_code == 200 and r.http_version == "HTTP/2", r.text
    counts = wait_until(
        lambda: (
            (t := two.per_worker("rawserve_requests_total", protocol="2", route="/predict"))
            and sum(t.values()) >= 20
            and t
        ),
        "h2 requests counted",
    )
    assert set(counts) == {"0", "1"}


def test_metrics_show_every_worker_whichever_answers(two: Served) -> None:
    """Each scrape reaches one worker (SO_REUSEPORT picks); each shows every
    worker's series, labelled, in a text prometheus-client parses with one
    HELP/TYPE per family."""
    for _ in range(10):
        with httpx.Client() as c:
            c.get(f"{two.url}/healthz")
    for _ in range(6):
        with httpx.Client() as c:  # new connections: either worker answers
            text = c.get(f"{two.url}/metrics").text
        families = list(text_string_to_metric_families(text))
        names = [f.name for f in families]
        assert len(names) == len(set(names))
        workers_seen = {
            sample.labels.get("worker") for family in families for sample in family.samples
        }
        assert workers_seen == {"0", "1"}, workers_seen
        assert text.count("# TYPE rawserve_requests_total counter") == 1


def test_expositions_merge_family_by_family() -> None:
    a = Registry()
    b = Registry()
    for i, registry in enumerate((a, b)):
        registry.counter("jobs", "Jobs done", ["kind"]).labels("x").inc(i + 1)
        registry.histogram("wait_seconds", "Waits", buckets=(0.1, 1.0)).observe(0.5)
        registry.gauge("depth", "Queue depth").set(7 * i)
    a.share("0", lambda: [b.render_own()])
    b.share("1", lambda: [a.render_own()])
    merged = a.render().decode()
    parsed = {f.name: f for f in text_string_to_metric_families(merged)}
    assert [(s.labels, s.value) for s in parsed["jobs"].samples if s.name == "jobs_total"] == [
        ({"worker": "0", "kind": "x"}, 1.0),
        ({"worker": "1", "kind": "x"}, 2.0),
    ]
    assert [(s.labels, s.value) for s in parsed["depth"].samples] == [
        ({"worker": "0"}, 0.0),
        ({"worker": "1"}, 7.0),
    ]
    counts = [s for s in parsed["wait_seconds"].samples if s.name == "wait_seconds_count"]
    assert [(s.labels["worker"], s.value) for s in counts] == [("0", 1.0), ("1", 1.0)]
    assert merged.count("# HELP jobs_total") == 1 and merged.count("# TYPE depth") == 1


async def _rebind(client: H3Client) -> None:
    """The client's next datagrams leave from a new UDP port (a NAT
    rebinding), on a new connection ID the server issued."""
    loop = asyncio.get_running_loop()
    old = client._transport
    # Dual-stack like the socket aioquic's connect() made (it sends to
    # ::ffff:127.0.0.1).
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0, 0, 0))
    await loop.create_datagram_endpoint(lambda: client, sock=sock)
    assert client._transport is not old
    client._quic.change_connection_id()
    if old is not None:
        old.close()


def settle(served: Served) -> None:
    """Wait until every worker has published metrics taken after this call:
    new connections reach both workers, and their counts must show from
    whichever worker answers the scrape."""

    def healthz() -> dict[str, float]:
        return served.per_worker("rawserve_requests_total", protocol="1.1", route="/healthz")

    before = healthz()
    for _ in range(30):
        with httpx.Client() as c:
            assert c.get(f"{served.url}/healthz").status_code == 200
    wait_until(
        lambda: (now := healthz()) and all(now.get(w, 0) > before.get(w, 0) for w in ("0", "1")),
        "both workers' metrics published",
    )


@pytest.mark.parametrize("steering", ["kernel", "forward"])
def test_http3_connection_survives_source_port_changes_across_workers(steering: str) -> None:
    """The kernel picks a worker's UDP socket by the client's address; after
    a rebinding it would be the other worker half of the time. By default a
    BPF program on the sockets steers by connection ID instead, so nothing
    needs forwarding; with RAWSERVE_QUIC_STEERING=forward the datagrams
    that land on the other worker are forwarded to the owner. Either way the
    owner keeps answering on the same connection."""
    served = Served("--workers", "2", "--no-cache", env={"RAWSERVE_QUIC_STEERING": steering})
    try:
        served.ready()
        served.wait_ready()
        how = "the kernel" if steering == "kernel" else "forwarding between workers"
        assert any(f"reach their connection's worker by {how}" in x for x in served.lines)

        async def run() -> list[int]:
            statuses = []
            async with h3_connect(served.quic_port) as c:
                statuses.append((await c.request("GET", "/healthz")).status)
                ports = set()
                for _ in range(12):
                    await _rebind(c)
                    assert c._transport is not None
                    ports.add(c._transport.get_extra_info("sockname")[1])
                    r = await c.request("GET", "/readyz")
                    statuses.append(r.status)
                    # Another request on the same connection, from the same new port.
                    statuses.append((await c.request("GET", "/healthz")).status)
                assert len(ports) == 12
                last = c._transport
            last.close()
            return statuses

        assert asyncio.run(run()) == [200] * 25
        settle(served)
        out = served.per_worker("rawserve_quic_datagrams_forwarded", direction="out")
        into = served.per_worker("rawserve_quic_datagrams_forwarded", direction="in")
        if steering == "forward":
            # Twelve rebindings each land on the other worker with probability
            # 1/2: some did (all twelve missing it: 1 in 4096).
            assert sum(out.values()) > 0 and sum(into.values()) > 0
        else:
            assert sum(out.values()) == sum(into.values()) == 0
        assert served.stop() == 0
    finally:
        if served.proc.poll() is None:
            served.proc.kill()


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(two: Served) -> None:
    victim = two.pids[0]
    os.kill(victim, signal.SIGKILL)
    two.wait_for(lambda lines: any(f"(pid {victim}) was killed by SIGKILL" in x for x in lines))
    # New connections the kernel hands to the dead worker's socket wait in its
    # backlog until the replacement accepts them: none is refused.
    for _ in range(20):
        with httpx.Client(timeout=30) as c:
            assert c.get(f"{two.url}/healthz").status_code == 200
    line = two.wait_for(
        lambda lines: next(
            (x for x in lines if "worker 0 (pid" in x and "serving again" in x), None
        )
    )
    new_pid = int(re.search(r"worker 0 \(pid (\d+)\)", line).group(1))  # type: ignore[union-attr]
    assert new_pid != victim
    os.kill(new_pid, 0)  # alive
    two.pids[0] = new_pid
    two.wait_ready()


def test_a_dead_workers_quic_clients_get_a_stateless_reset_from_its_replacement() -> None:
    """Connection IDs carry their worker and reset tokens derived with a key
    every worker shares: once the owner of a connection is killed and
    replaced, the client's next packet is answered with a stateless reset
    bearing the token the client was given (RFC 9000 section 10.3), so it
    gives up at once instead of at its idle timeout."""
    served = Served("--workers", "2", "tests.apps.echo_app:app")
    try:
        served.ready()

        async def connection_ids() -> list[tuple[bytes, bytes]]:
            """The handshake's connection ID (its token in the transport
            parameters) and one issued later (NEW_CONNECTION_ID)."""
            ids = []
            async with h3_connect(served.quic_port) as c:
                assert (await c.request("GET", "/slow?seconds=0")).status == 200
                ids.append((c._quic._peer_cid.cid, c._quic._peer_cid.stateless_reset_token))
                c._quic.change_connection_id()
                assert (await c.request("GET", "/slow?seconds=0")).status == 200
                ids.append((c._quic._peer_cid.cid, c._quic._peer_cid.stateless_reset_token))
            return ids

        ids = asyncio.run(connection_ids())
        assert ids[0][0] != ids[1][0]
        assert all(len(cid) == 10 and len(token) == 16 for cid, token in ids)
        owner = int.from_bytes(ids[0][0][:2], "big")
        assert int.from_bytes(ids[1][0][:2], "big") == owner
        victim = served.pids[owner]
        os.kill(victim, signal.SIGKILL)
        served.wait_for(
            lambda lines: any(f"worker {owner} (pid" in x and "serving again" in x for x in lines)
        )
        # A short-header packet of that connection, from anywhere: the kernel
        # steers it to the replacement, which no longer has the connection.
        for cid, token in ids:
            packet = b"\x41" + cid + os.urandom(60)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(10)
                sock.sendto(packet, ("127.0.0.1", served.quic_port))
                reset, _ = sock.recvfrom(2048)
            assert len(reset) < len(packet) and len(reset) >= 21
            assert reset[0] & 0xC0 == 0x40  # looks like a short-header packet
            assert reset[-16:] == token
        assert served.stop() == 0
    finally:
        if served.proc.poll() is None:
            served.proc.kill()


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_sigterm_drains_every_worker_and_exits_0() -> None:
    served = Served("--workers", "2", "tests.apps.echo_app:app", "--graceful-timeout", "10")
    try:
        served.ready()
        conns = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", served.http_port), timeout=30)
            # Answered, so a worker holds this connection.
            s.sendall(b"GET /slow?seconds=0 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(s).startswith(b"HTTP/1.1 200")
            conns.append(s)
        for s in conns:
            s.sendall(b"GET /slow?seconds=1.0 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # read by the workers; each takes a second to answer
        served.proc.send_signal(signal.SIGTERM)
        answers = [_read_response(s) for s in conns]
        code = served.stop()
        assert code == 0, "\n".join(served.lines)
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
            assert body == b'{"slept":1.0}'
        assert sum("draining connections" in line for line in served.lines) == 2
        for s in conns:
            s.close()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()


def test_workers_0_starts_one_per_core() -> None:
    cores = len(os.sched_getaffinity(0))
    served = Served("--workers", "0", "tests.apps.echo_app:app")
    try:
        served.ready()
        assert len(served.pids) == cores
        assert any(f"{cores} workers (pids" in line for line in served.lines)
        assert httpx.get(f"{served.url}/slow?seconds=0").status_code == 200
        assert served.stop() == 0
    finally:
        if served.proc.poll() is None:
            served.proc.kill()


def test_a_worker_that_cannot_start_is_one_line_and_status_1() -> None:
    served = Served("--workers", "2", "nosuchmodule:app")
    code = served.proc.wait(60)
    served._reader.join(5)
    assert code == 1
    lines = [line for line in served.lines if line.strip()]
    assert lines[-1].startswith("rawserve: error: "), lines
    assert "nosuchmodule" in lines[-1]
    assert "Traceback" not in "\n".join(served.lines)


def test_a_taken_port_is_one_line_before_any_worker_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "rawserve", "--workers", "2", "--http-port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"rawserve: error: port {port} on 127.0.0.1 is already in use"
    )


def test_workers_drain_and_exit_when_the_supervisor_is_killed() -> None:
    served = Served("--workers", "2", "tests.apps.echo_app:app")
    try:
        served.ready()
        served.proc.kill()
        served.proc.wait(30)

        def gone() -> bool:
            for pid in served.pids:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                # A zombie (reaped by init) is gone too.
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        return False
            return True

        wait_until(gone, "workers still running after their supervisor died")
        served._reader.join(5)
        assert sum("the supervisor is gone; draining" in x for x in served.lines) == 2
    finally:
        for pid in served.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_http3_with_retry_on_every_worker() -> None:
    """--quic-retry: the Retry token key is the supervisor's, so whichever
    worker a client's Initial reaches validates it."""
    served = Served("--workers", "2", "tests.apps.echo_app:app", "--quic-retry")
    try:
        served.ready()

        async def run() -> list[int]:
            statuses = []
            for _ in range(8):  # new connections: new source ports, either worker
                async with h3_connect(served.quic_port) as c:
                    statuses.append((await c.request("GET", "/slow?seconds=0")).status)
            return statuses

        assert asyncio.run(run()) == [200] * 8
        assert served.stop() == 0
    finally:
        if served.proc.poll() is None:
            served.proc.kill()


@pytest.mark.parametrize(
    "addr", [("192.0.2.7", 443), ("2001:db8::1", 50000, 0, 0), ("::ffff:127.0.0.1", 1, 3, 4)]
)
def test_a_forwarded_datagram_keeps_its_client_address(addr: Any) -> None:
    data = os.urandom(1200)
    assert unpack_forwarded(pack_forwarded(data, addr)) == (data, addr)
