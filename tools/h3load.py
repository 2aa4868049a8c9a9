"""An HTTP/3 load client on aioquic, the same for every server: N requests
over one QUIC connection, C of them in flight at a time (C streams), each
request's latency, and the server's CPU time per request from /proc.

    python tools/h3load.py PORT [--host 127.0.0.1] [-n 3000] [-c 16] [--path /predict]
                           [--body FILE] [--warm-up 100] [--pid PID ...] [--json]

Without ``--body`` the request is the digits model's ``POST /predict`` with
its first sample row (rawserve's built-in app and tools/peers/fastapi_app.py
answer it alike). ``--pid`` names server processes: the CPU time (utime +
stime, with reaped children) of each one's whole process tree is read before
and after the measured requests, so warm-up and the handshake are not in it.
Used by tools/bench.py (scenario h3) and tools/bench_lossy.py; it imports
nothing from rawserve.

A Python QUIC client saturates near 1,200-2,500 requests/s on one core: rps
here is mostly the client's limit, so CPU per request is the figure that
compares servers. Run it pinned on a core of its own (taskset).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cpu_seconds as tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent


def digits_body() -> bytes:
    meta = json.loads((ROOT / "rawserve" / "models" / "digits.json").read_text())
    return json.dumps({"inputs": meta["samples"]["inputs"][0]}).encode()


@dataclass
class Result:
    requests: int
    concurrency: int
    answered: int = 0  # a complete response with a status
    non_2xx: int = 0
    failed: int = 0  # reset, timed out, or the connection closed
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    cpu_us: float = math.nan  # server CPU per answered request (with --pid)
    handshake_ms: float = math.nan
    note: str = ""
    latencies_ms: list[float] = field(default_factory=list)


class LoadClient(QuicConnectionProtocol):
    """Requests in, a future per stream out; nothing kept once answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.pending: dict[int, tuple[asyncio.Future[int], list[int]]] = {}
        self.bodies: dict[int, list[bytes]] = {}  # only for the streams that want theirs
        self.closed: str = ""

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self.pending:
            self._end(event.stream_id, -1)
        elif isinstance(event, ConnectionTerminated):
            self.closed = f"connection closed: {event.error_code} {event.reason_phrase}"
            for sid in list(self.pending):
                self._end(sid, -1)
        for h3_event in self.h3.handle_event(event):
            sid = getattr(h3_event, "stream_id", -1)
            if sid not in self.pending:
                continue
            if isinstance(h3_event, HeadersReceived) and not self.pending[sid][1]:
                status = dict(h3_event.headers).get(b":status", b"0")
                self.pending[sid][1].append(int(status))
            if isinstance(h3_event, DataReceived) and sid in self.bodies:
                self.bodies[sid].append(h3_event.data)
            if isinstance(h3_event, HeadersReceived | DataReceived) and h3_event.stream_ended:
                self._end(sid, self.pending[sid][1][0] if self.pending[sid][1] else 0)

    def _end(self, sid: int, status: int) -> None:
        future, _ = self.pending.pop(sid)
        if not future.done():
            future.set_result(status)

    async def post(
        self,
        authority: bytes,
        path: bytes,
        body: bytes,
        timeout_s: float,
        keep: list[bytes] | None = None,
    ) -> int:
        """One request; its status, or -1 when it got no complete answer.
        The response body goes to ``keep`` if given."""
        if self.closed:
            return -1
        sid = self._quic.get_next_available_stream_id()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[sid] = (future, [])
        if keep is not None:
            self.bodies[sid] = keep
        head = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        self.h3.send_headers(sid, head)
        self.h3.send_data(sid, body, end_stream=True)
        self.transmit()
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self.pending.pop(sid, None)
            return -1
        finally:
            self.bodies.pop(sid, None)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (tools/bench.py's rule)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(max(1, math.ceil(q / 100 * len(ordered))), len(ordered)) - 1]


def client_configuration() -> QuicConfiguration:
    return QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE, server_name="localhost"
    )


async def fetch_once(
    port: int, *, host: str = "127.0.0.1", path: str = "/predict", body: bytes | None = None
) -> tuple[int, bytes]:
    """One request on a fresh connection: its status (-1: no answer) and body."""
    body = digits_body() if body is None else body
    configuration = client_configuration()
    async with connect(host, port, configuration=configuration, create_protocol=LoadClient) as c:
        client: LoadClient = c  # type: ignore[assignment]
        chunks: list[bytes] = []
        status = await client.post(b"localhost", path.encode(), body, 10.0, chunks)
    return status, b"".join(chunks)


async def run_load(
    port: int,
    *,
    host: str = "127.0.0.1",
    requests: int = 3000,
    concurrency: int = 16,
    path: str = "/predict",
    body: bytes | None = None,
    warm_up: int = 100,
    pids: Sequence[int] = (),
    timeout_s: float = 30.0,
) -> Result:
    """``warm_up`` requests, then ``requests`` measured ones, ``concurrency``
    in flight, all on one connection."""
    body = digits_body() if body is None else body
    configuration = client_configuration()
    result = Result(requests, concurrency)
    authority, target = b"localhost", path.encode()
    started = time.perf_counter()
    async with connect(host, port, configuration=configuration, create_protocol=LoadClient) as c:
        client: LoadClient = c  # type: ignore[assignment]
        result.handshake_ms = (time.perf_counter() - started) * 1000
        for _ in range(warm_up):
            status = await client.post(authority, target, body, timeout_s)
            # A request lost to a lossy network is not a broken server.
            if (status < 0 and client.closed) or (status >= 0 and not 200 <= status < 300):
                result.note = f"warm-up answered {status} {client.closed}".strip()
                result.failed = requests
                return result
        left = requests
        latencies: list[float] = []

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                status = await client.post(authority, target, body, timeout_s)
                if status < 0:
                    result.failed += 1
                    continue
                latencies.append((time.perf_counter() - t0) * 1000)
                result.answered += 1
                if not 200 <= status < 300:
                    result.non_2xx += 1

        cpu0, t0 = tree_cpu_seconds(pids), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - t0
        if pids:
            cpu = tree_cpu_seconds(pids) - cpu0
            result.cpu_us = cpu / result.answered * 1e6 if result.answered else math.nan
        result.note = client.closed
    result.latencies_ms = latencies
    result.rps = result.answered / result.seconds if result.seconds else 0.0
    result.p50_ms = percentile(latencies, 50)
    result.p99_ms = percentile(latencies, 99)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("port", type=int, help="the server's UDP port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-n", "--requests", type=int, default=3000, help="measured requests")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="streams in flight")
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--body", type=Path, help="JSON body (default: one digits row)")
    parser.add_argument("--warm-up", type=int, default=100, help="requests before measuring")
    parser.add_argument("--pid", type=int, action="append", default=[], help="server process")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument(
        "--deadline", type=float, default=600.0, help="seconds for the whole run, then give up"
    )
    parser.add_argument("--json", action="store_true", help="the result as JSON, latencies too")
    parser.add_argument(
        "--once", action="store_true", help="one request; print its status and body as JSON"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    body = args.body.read_bytes() if args.body else None
    if args.once:
        try:
            once = fetch_once(args.port, host=args.host, path=args.path, body=body)
            status, data = asyncio.run(asyncio.wait_for(once, 20))
        except (TimeoutError, OSError, ConnectionError) as exc:
            status, data = -1, f"{type(exc).__name__}: {exc}".encode()
        print(json.dumps({"status": status, "body": data.decode(errors="replace")}))
        return 0 if status == 200 else 1

    async def bounded() -> Result:
        return await asyncio.wait_for(
            run_load(
                args.port,
                host=args.host,
                requests=args.requests,
                concurrency=args.concurrency,
                path=args.path,
                body=body,
                warm_up=args.warm_up,
                pids=args.pid,
                timeout_s=args.timeout,
            ),
            args.deadline,
        )

    try:
        result = asyncio.run(bounded())
    except (TimeoutError, OSError, ConnectionError) as exc:
        result = Result(args.requests, args.concurrency, failed=args.requests)
        result.note = f"{type(exc).__name__}: {exc}"
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"{result.answered} answered ({result.non_2xx} non-2xx, {result.failed} failed) in "
            f"{result.seconds:.2f} s: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, server CPU {result.cpu_us:,.0f} µs/request "
            f"{result.note}"
        )
    return 0 if result.failed == 0 and result.non_2xx == 0 and result.answered else 1


if __name__ == "__main__":
    sys.exit(main())
