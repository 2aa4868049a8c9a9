"""A bounded soak (issue 15, build 5): mixed traffic over every protocol for a
while, and nothing the server holds keeps growing.

Starts ``python -m rawserve`` (cleartext HTTP/1.1 + h2c, and HTTP/3 on UDP)
and runs, concurrently, until ``--minutes`` are over:

- HTTP/1.1: keep-alive GETs and ``POST /predict``, malformed requests (a bad
  Content-Length), requests cut off mid-head with a TCP reset, and slow
  readers (a small receive buffer, a few bytes read at a time, then gone);
- h2c (prior knowledge): GETs and predictions on shared connections, streams
  reset mid-body (RST_STREAM), a malformed request (no ``:path``);
- HTTP/3 (aioquic's client): GETs and predictions, streams reset mid-body,
  a malformed request (an uppercase field name: H3_MESSAGE_ERROR), and a client that
  stops reading a response and then goes away.

Every second it samples the server's RSS (/proc/PID/status), open file
descriptors (/proc/PID/fd) and asyncio task count. The task count is read
without touching the server's code: the server runs with a
``sitecustomize`` (on PYTHONPATH, only when this tool starts it) whose
thread counts the live, unfinished tasks in asyncio's task registry every
quarter second and writes the figure to a file the tool reads.

The run fails when, after the warm-up (the first quarter of the run, at
least 3 s), any sample exceeds the warm-up's peak by more than its bound
(``--rss-slack-mb``, ``--fd-slack``, ``--task-slack``), or when, once
traffic stops and clients are gone, open fds and tasks do not come back
to within the same slack of what the idle server held before traffic, or
when more than 1% of the client exchanges failed (a wrong answer, a
timeout).

    python tools/soak.py --minutes 10 [--h1 4] [--h2 2] [--h3 2]

Prints a JSON summary; exit status 0 when nothing grew past its bound.
tests/test_soak.py runs a 10-second version.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.h3client import H3Client, h3_connect  # noqa: E402

SITECUSTOMIZE = """
import os, threading, time
_path = os.environ.get("RAWSERVE_SOAK_TASKS_FILE")
if _path:
    import asyncio.tasks as _tasks

    def _count():
        names = ("_all_tasks", "_scheduled_tasks", "_eager_tasks")
        registries = [getattr(_tasks, n, None) for n in names]
        while True:
            n = None
            for _ in range(5):
                try:
                    n = sum(1 for r in registries if r is not None for t in list(r) if not t.done())
                    break
                except RuntimeError:  # the set changed while copied
                    continue
            if n is not None:
                tmp = _path + ".tmp"
                with open(tmp, "w") as f:
                    f.write(str(n))
                os.replace(tmp, _path)
            time.sleep(0.25)

    threading.Thread(target=_count, name="soak-task-count", daemon=True).start()
"""


def _predict_body() -> bytes:
    samples = json.loads((ROOT / "rawserve" / "models" / "digits.json").read_text())
    return json.dumps({"inputs": samples["samples"]["inputs"][0]}).encode()


PREDICT = _predict_body()


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int
    tasks: int


@dataclass
class Counts:
    by_kind: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def ok(self, kind: str) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    def error(self, kind: str, exc: BaseException) -> None:
        key = f"{kind}: {type(exc).__name__}"
        self.errors[key] = self.errors.get(key, 0) + 1


# -- server and sampling ----------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(pid: int, tasks_file: Path, t0: float) -> Sample:
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    try:
        tasks = int(tasks_file.read_text())
    except (OSError, ValueError):
        tasks = -1
    return Sample(round(time.monotonic() - t0, 2), rss, fds, tasks)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode} at startup")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the server was not ready within {timeout:g} s")


# -- HTTP/1.1 ---------------------------------------------------------------------


async def h1_raw(port: int, data: bytes, *, rst: bool = False, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        got = b""
        if read:
            with contextlib.suppress(ConnectionError):
                got = await asyncio.wait_for(reader.read(65536), 10)
        return got
    finally:
        if rst:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def h1_slow_reader(port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    try:
        writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        for _ in range(10):
            if not await asyncio.wait_for(reader.read(256), 10):
                break
            await asyncio.sleep(0.02)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def h1_worker(port: int, stop: asyncio.Event, counts: Counts) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        while not stop.is_set():
            kind = random.choice(("get", "predict", "predict", "bad", "reset", "slow"))
            try:
                if kind == "get":
                    (await client.get("/readyz")).raise_for_status()
                elif kind == "predict":
                    r = await client.post(
                        "/predict", content=PREDICT, headers={"content-type": "application/json"}
                    )
                    assert r.status_code in (200, 503), r.status_code
                elif kind == "bad":
                    got = await h1_raw(
                        port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
                    )
                    assert got.startswith(b"HTTP/1.1 4"), got[:40]
                elif kind == "reset":
                    await h1_raw(
                        port,
                        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le",
                        rst=True,
                        read=False,
                    )
                else:
                    await h1_slow_reader(port)
                counts.ok(f"h1 {kind}")
            except Exception as exc:  # counted and reported
                counts.error(f"h1 {kind}", exc)


# -- h2c --------------------------------------------------------------------------


async def h2_reset_and_bad(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
    )
    conn.initiate_connection()
    head = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "x"),
        (":path", "/predict"),
        ("content-type", "application/json"),
    ]
    conn.send_headers(1, head)
    conn.send_data(1, PREDICT[:10])
    conn.reset_stream(1, 8)  # CANCEL mid-body
    conn.send_headers(
        3, [(":method", "GET"), (":scheme", "http"), (":authority", "x")], end_stream=True
    )
    writer.write(conn.data_to_send())
    await writer.drain()
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            events = conn.receive_data(data)
            if any(
                (isinstance(e, h2.events.StreamReset) and e.stream_id == 3)
                or (isinstance(e, h2.events.ResponseReceived) and e.stream_id == 3)
                for e in events
            ):
                break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def h2_worker(port: int, stop: asyncio.Event, counts: Counts) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", http1=False, http2=True
    ) as client:
        while not stop.is_set():
            kind = random.choice(("get", "predict", "predict", "reset"))
            try:
                if kind == "get":
                    (await client.get("/readyz")).raise_for_status()
                elif kind == "predict":
                    rs = await asyncio.gather(
                        *[
                            client.post(
                                "/predict",
                                content=PREDICT,
                                headers={"content-type": "application/json"},
                            )
                            for _ in range(4)
                        ]
                    )
                    assert all(r.status_code in (200, 503) for r in rs)
                else:
                    await h2_reset_and_bad(port)
                counts.ok(f"h2 {kind}")
            except Exception as exc:  # counted and reported
                counts.error(f"h2 {kind}", exc)


# -- HTTP/3 -----------------------------------------------------------------------


async def h3_session(c: H3Client, stop: asyncio.Event, counts: Counts, rounds: int) -> None:
    for _ in range(rounds):
        if stop.is_set():
            return
        kind = random.choice(("get", "predict", "predict", "reset", "bad"))
        try:
            if kind == "get":
                r = await c.request("GET", "/readyz")
                assert r.status == 200, r.status
            elif kind == "predict":
                rs = await asyncio.gather(
                    *[
                        c.request(
                            "POST",
                            "/predict",
                            body=PREDICT,
                            headers=[(b"content-type", b"application/json")],
                        )
                        for _ in range(4)
                    ]
                )
                assert all(r.status in (200, 503) for r in rs)
            elif kind == "reset":
                sid = c.start(
                    "POST",
                    "/predict",
                    body=PREDICT[:10],
                    headers=[(b"content-type", b"application/json")],
                    end=False,
                )
                c._quic.reset_stream(sid, 0x10C)  # H3_REQUEST_CANCELLED
                c.transmit()
            else:
                # An uppercase field name: malformed (RFC 9114 section 4.2).
                r = await c.request("GET", "/readyz", headers=[(b"X-Bad", b"1")])
                assert getattr(r, "reset", None) or r.status == 400, r.status
            counts.ok(f"h3 {kind}")
        except Exception as exc:  # counted and reported
            counts.error(f"h3 {kind}", exc)


async def h3_worker(port: int, stop: asyncio.Event, counts: Counts) -> None:
    while not stop.is_set():
        try:
            async with h3_connect(port) as c:
                await h3_session(c, stop, counts, rounds=20)
                if random.random() < 0.3:
                    # A slow reader: asks for a page, stops reading, goes away.
                    c.deaf = True
                    c.start("GET", "/openapi.json")
                    await asyncio.sleep(0.2)
                    counts.ok("h3 deaf")
        except Exception as exc:  # counted and reported
            counts.error("h3 session", exc)


# -- the run ----------------------------------------------------------------------


def judge(
    samples: list[Sample], idle: Sample, settled: Sample, warmup_s: float, args: argparse.Namespace
) -> list[str]:
    warm = [s for s in samples if s.t <= warmup_s]
    after = [s for s in samples if s.t > warmup_s]
    failures: list[str] = []
    if not warm or not after:
        return ["too few samples"]
    bounds = {
        "rss_kb": args.rss_slack_mb * 1024,
        "fds": args.fd_slack,
        "tasks": args.task_slack,
    }
    for name, slack in bounds.items():
        peak = max(getattr(s, name) for s in warm)
        worst = max(getattr(s, name) for s in after)
        if worst > peak + slack:
            failures.append(f"{name} grew after warm-up: {peak} -> {worst} (bound +{slack})")
    if settled.fds > idle.fds + args.fd_slack:
        failures.append(f"open fds after traffic: {settled.fds}, idle before: {idle.fds}")
    if settled.tasks > idle.tasks + args.task_slack:
        failures.append(f"tasks after traffic: {settled.tasks}, idle before: {idle.tasks}")
    if idle.tasks < 0:
        failures.append("the task count was never reported")
    return failures


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    port, qport = free_port(), free_port(socket.SOCK_DGRAM)
    tmp = Path(tempfile.mkdtemp(prefix="rawserve-soak-"))
    (tmp / "sitecustomize.py").write_text(SITECUSTOMIZE)
    tasks_file = tmp / "tasks"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(tmp), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        RAWSERVE_SOAK_TASKS_FILE=str(tasks_file),
    )
    cmd = [
        sys.executable, "-m", "rawserve",
        "--http-port", str(port), "--port", "-1", "--quic-port", str(qport),
        "--log-level", "warning", *args.server_args,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    counts = Counts()
    samples: list[Sample] = []
    try:
        await wait_ready(port, proc, args.startup_timeout)
        await asyncio.sleep(0.5)  # the task counter's first figure
        t0 = time.monotonic()
        idle = sample(proc.pid, tasks_file, t0)
        stop = asyncio.Event()
        workers = [
            *[asyncio.create_task(h1_worker(port, stop, counts)) for _ in range(args.h1)],
            *[asyncio.create_task(h2_worker(port, stop, counts)) for _ in range(args.h2)],
            *[asyncio.create_task(h3_worker(qport, stop, counts)) for _ in range(args.h3)],
        ]
        duration = args.minutes * 60
        warmup_s = max(3.0, duration / 4)
        while time.monotonic() - t0 < duration:
            await asyncio.sleep(1.0)
            samples.append(sample(proc.pid, tasks_file, t0))
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode}")
        stop.set()
        await asyncio.wait(workers, timeout=60)
        for w in workers:
            w.cancel()
        # Clients are gone: fds and tasks come back (bounded wait, fails only
        # on a leak; QUIC connections close on the client's CONNECTION_CLOSE).
        settled = sample(proc.pid, tasks_file, t0)
        for _ in range(100):
            await asyncio.sleep(0.3)
            settled = sample(proc.pid, tasks_file, t0)
            if settled.fds <= idle.fds + 2 and 0 <= settled.tasks <= idle.tasks + 2:
                break
        failures = judge(samples, idle, settled, warmup_s, args)
        done, errors = sum(counts.by_kind.values()), sum(counts.errors.values())
        if errors > 0.01 * (done + errors):
            failures.append(f"{errors} of {done + errors} client exchanges failed")
        return {
            "minutes": args.minutes,
            "idle": vars(idle),
            "settled": vars(settled),
            "warmup_s": warmup_s,
            "samples": [vars(s) for s in samples],
            "requests": counts.by_kind,
            "client_errors": counts.errors,
            "failures": failures,
        }
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        tail = err.decode(errors="replace").strip().splitlines()[-20:]
        if any("Traceback" in line for line in tail):
            print("\n".join(tail), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--h1", type=int, default=4, help="HTTP/1.1 workers")
    p.add_argument("--h2", type=int, default=2, help="h2c workers")
    p.add_argument("--h3", type=int, default=2, help="HTTP/3 workers")
    p.add_argument("--rss-slack-mb", type=int, default=48)
    p.add_argument("--fd-slack", type=int, default=32)
    p.add_argument("--task-slack", type=int, default=64)
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("server_args", nargs="*", help="passed to python -m rawserve after --")
    args = p.parse_args(argv)
    summary = asyncio.run(soak(args))
    print(json.dumps(summary, indent=1))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
