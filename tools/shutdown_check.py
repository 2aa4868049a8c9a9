"""Graceful shutdown under load loses nothing (issue 15, build 4).

Starts ``python -m rawserve`` with the built-in app, runs concurrent
inference requests (``POST /predict``) over HTTP/1.1 (keep-alive
connections), HTTP/2 (h2c, many streams per connection) and HTTP/3 (aioquic's
client, many streams per connection), sends SIGTERM mid-load, and checks:

- every request the server accepted got a complete answer: 200, or 503 for
  work it declined; none truncated, none reset without a code;
- HTTP/2: the GOAWAY's last stream id is right: every stream at or below it
  was answered, none above it was;
- HTTP/3: the same with the GOAWAY frame on the control stream (RFC 9114
  5.2: it names the first stream id not processed), streams from it on
  rejected with H3_REQUEST_REJECTED or not answered, and the connection
  closed with H3_NO_ERROR;
- HTTP/1.1: a request is only ever left unanswered on a connection the
  server closed before reading it (no response byte at all; the client may
  retry it, RFC 9112 9.3.1);
- the process exits within ``--graceful-timeout`` (plus ``--exit-slack``).

    python tools/shutdown_check.py [--h1 8] [--h2 2] [--h3 2] [--streams 16]
        [--load-s 2] [--graceful-timeout 10]

Prints a JSON summary; exit status 0 when nothing was lost, 1 otherwise.
tests/test_shutdown_check.py runs a small version in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.events import QuicEvent, StreamDataReceived
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.h3client import H3Client, client_configuration  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ACCEPTED_STATUSES = (200, 503)


def _body() -> bytes:
    samples = json.loads((ROOT / "rawserve" / "models" / "digits.json").read_text())
    return json.dumps({"inputs": samples["samples"]["inputs"][0]}).encode()


BODY = _body()


@dataclass
class Results:
    """What happened to each request, by outcome, and what went wrong."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    goaways: list[int] = field(default_factory=list)
    after_sigterm: int = 0  # requests answered after SIGTERM
    sigterm_at: float | None = None

    def record(self, outcome: str, failure: str | None = None, at: float | None = None) -> None:
        """``at``: when the answer completed (monotonic), if not now."""
        at = time.monotonic() if at is None else at
        with self.lock:
            self.outcomes[outcome] += 1
            if (
                self.sigterm_at is not None
                and at >= self.sigterm_at
                and outcome.startswith("answered")
            ):
                self.after_sigterm += 1
            if failure is not None and len(self.failures) < 50:
                self.failures.append(failure)


# -- HTTP/1.1 -----------------------------------------------------------------


class _Closed(Exception):
    def __init__(self, got: bytes) -> None:
        super().__init__(len(got))
        self.got = got


def _recv_exact(sock: Any, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise _Closed(bytes(buf))
        buf += chunk
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _recv_until(sock: Any, buf: bytearray, sep: bytes) -> bytes:
    while (i := buf.find(sep)) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise _Closed(bytes(buf))
        buf += chunk
    out = bytes(buf[: i + len(sep)])
    del buf[: i + len(sep)]
    return out


def _read_response(sock: Any, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response; ``buf`` keeps what arrived if it fails midway."""
    head = _recv_until(sock, buf, b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = _recv_exact(sock, buf, int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int(_recv_until(sock, buf, b"\r\n").strip(), 16)
            parts.append(_recv_exact(sock, buf, size + 2)[:size])
            if size == 0:
                break
        body = b"".join(parts)
    else:
        raise ValueError(f"unframed response: {head!r}")
    if buf:
        raise ValueError(f"{len(buf)} bytes after the response")
    return status, headers, body


class _Counting:
    """A socket's ``recv`` that counts the bytes of one response."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.got = 0

    def recv(self, n: int) -> bytes:
        data = self.sock.recv(n)
        self.got += len(data)
        return data


def _check_answer(status: int, body: bytes) -> str | None:
    if status not in ACCEPTED_STATUSES:
        return f"status {status}: {body[:200]!r}"
    try:
        json.loads(body)
    except ValueError:
        return f"status {status} with a body that is not JSON: {body[:200]!r}"
    return None


def h1_worker(port: int, results: Results, stop: threading.Event) -> None:
    """Keep-alive connections sending requests one after another until the
    server stops accepting connections."""
    request = (
        b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            results.record("h1 connection refused")
            return
        with sock:
            while not stop.is_set():
                try:
                    sock.sendall(request)
                except OSError:
                    results.record("h1 not accepted (closed before sending)")
                    break
                counting = _Counting(sock)
                try:
                    status, headers, body = _read_response(counting, bytearray())
                except (_Closed, ConnectionResetError) as exc:
                    got = counting.got
                    if got:
                        results.record("h1 truncated", f"HTTP/1.1 response cut after {got} bytes")
                    elif isinstance(exc, _Closed):
                        # The server closed the connection (idle at shutdown)
                        # before reading the request: a client may retry it.
                        results.record("h1 not accepted (closed unanswered)")
                    else:
                        # The same, with the request bytes still unread in the
                        # server's socket when it closed: the kernel says RST.
                        results.record("h1 not accepted (reset, no response byte)")
                    break
                except (OSError, ValueError) as exc:
                    results.record("h1 broken", f"HTTP/1.1: {exc!r}")
                    break
                problem = _check_answer(status, body)
                results.record(f"answered h1 {status}", problem)
                if headers.get("connection") == "close":
                    break


# -- HTTP/2 -------------------------------------------------------------------


class H2Client:
    """Frames written and parsed by hand: the h2 library stops reading at a
    GOAWAY, and what comes after it is exactly what is checked here."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.buf = bytearray()
        self.next_id = 1
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())

    def request(self) -> int:
        sid = self.next_id
        self.next_id += 2
        block = self.encoder.encode(
            [
                (":method", "POST"),
                (":path", "/predict"),
                (":scheme", "http"),
                (":authority", "localhost"),
                ("content-type", "application/json"),
                ("content-length", str(len(BODY))),
            ]
        )
        headers = HeadersFrame(sid, block, flags=["END_HEADERS"])
        data = DataFrame(sid, BODY, flags=["END_STREAM"])
        self.sock.sendall(headers.serialize() + data.serialize())
        return sid

    def frames(self) -> list[Frame]:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Closed(b"")
        self.buf += chunk
        out = []
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(self.buf[9 : 9 + length]))
            del self.buf[: 9 + length]
            out.append(frame)
        reply = b""
        for frame in out:
            if isinstance(frame, DataFrame) and frame.flow_controlled_length:
                # Keep the server's windows open: these responses are read.
                n = frame.flow_controlled_length
                reply += WindowUpdateFrame(0, window_increment=n).serialize()
                reply += WindowUpdateFrame(frame.stream_id, window_increment=n).serialize()
            elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                reply += SettingsFrame(0, flags=["ACK"]).serialize()
            elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                reply += PingFrame(0, frame.opaque_data, flags=["ACK"]).serialize()
        if reply:
            try:
                self.sock.sendall(reply)
            except OSError:
                pass
        return out


@dataclass
class _Stream:
    status: int | None = None
    block: bytes = b""
    body: bytes = b""
    ended: bool = False
    reset: int | None = None
    done: bool = False
    done_at: float = 0.0


def h2_worker(port: int, streams: int, results: Results, stop: threading.Event) -> None:
    """One h2c connection keeping ``streams`` requests in flight until GOAWAY."""
    try:
        client = H2Client(port)
    except OSError:
        results.record("h2 connection refused")
        return
    state: dict[int, _Stream] = {}
    goaway: int | None = None
    inflight = 0
    with client.sock:
        while True:
            while goaway is None and not stop.is_set() and inflight < streams:
                try:
                    state[client.request()] = _Stream()
                except OSError:
                    break
                inflight += 1
            try:
                frames = client.frames()
            except (_Closed, OSError):
                break
            for frame in frames:
                s = state.get(frame.stream_id)
                if isinstance(frame, GoAwayFrame):
                    if goaway is None:
                        goaway = frame.last_stream_id
                        with results.lock:
                            results.goaways.append(goaway)
                        if frame.error_code:
                            results.record("h2 goaway error", f"GOAWAY code {frame.error_code}")
                elif s is None:
                    continue
                elif isinstance(frame, HeadersFrame | ContinuationFrame):
                    s.block += frame.data
                    if "END_HEADERS" in frame.flags:
                        headers = dict(client.decoder.decode(s.block, raw=True))
                        s.block = b""
                        if b":status" in headers and s.status is None:
                            s.status = int(headers[b":status"])
                    if "END_STREAM" in frame.flags:
                        s.ended = True
                elif isinstance(frame, DataFrame):
                    s.body += frame.data
                    if "END_STREAM" in frame.flags:
                        s.ended = True
                elif isinstance(frame, RstStreamFrame):
                    if s.reset is None:
                        s.reset = frame.error_code
                    else:
                        # A DATA frame that crossed the first RST_STREAM draws a
                        # second (h2 answers frames on closed streams so; RFC
                        # 9113 5.1 would have them ignored). Counted, harmless.
                        results.record("h2 second RST_STREAM on a closed stream")
                if s is not None and (s.ended or s.reset is not None) and not s.done:
                    s.done = True
                    s.done_at = time.monotonic()
                    inflight -= 1
            if goaway is not None and inflight == 0:
                break
    last = goaway if goaway is not None else -1
    for sid, s in sorted(state.items()):
        accepted = goaway is None or sid <= last
        if s.ended and s.status is not None:
            problem = _check_answer(s.status, s.body)
            if not accepted:
                problem = (
                    problem or f"stream {sid} above GOAWAY's last stream id {last} was answered"
                )
            results.record(f"answered h2 {s.status}", problem, at=s.done_at)
        elif not accepted:
            # Above the last stream id: never processed, the client may retry.
            if s.reset not in (None, 0x7):  # REFUSED_STREAM is the only right reset
                results.record("h2 refused badly", f"stream {sid} above GOAWAY reset {s.reset}")
            else:
                results.record("h2 not accepted (above GOAWAY)")
        elif s.reset is not None:
            results.record("h2 reset", f"stream {sid} (<= {last}) reset with code {s.reset}")
        else:
            results.record(
                "h2 lost",
                f"stream {sid} (<= last stream id {last}) unanswered: "
                f"status {s.status}, {len(s.body)} body bytes, connection closed",
            )


# -- HTTP/3 -------------------------------------------------------------------

H3_NO_ERROR = 0x100
H3_REQUEST_REJECTED = 0x10B
H3_GOAWAY = 0x7
H3_CONTROL_STREAM = 0x0


class _ShutdownClient(H3Client):
    """Reads the server's control stream alongside aioquic, which discards
    GOAWAY's payload: ``goaway`` is the first request stream id the server
    says it will not process (RFC 9114 5.2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.goaway: int | None = None
        self._uni: dict[int, bytes] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        # Server-initiated unidirectional streams have ids ending in 0b11.
        if isinstance(event, StreamDataReceived) and event.stream_id % 4 == 3:
            data = self._uni.get(event.stream_id, b"") + event.data
            self._uni[event.stream_id] = data
            self._read_control(data)
        super().quic_event_received(event)

    def _read_control(self, data: bytes) -> None:
        buf = Buffer(data=data)
        try:
            if buf.pull_uint_var() != H3_CONTROL_STREAM:
                return
            while not buf.eof():
                kind, size = buf.pull_uint_var(), buf.pull_uint_var()
                payload = buf.pull_bytes(size)
                if kind == H3_GOAWAY and self.goaway is None:
                    self.goaway = Buffer(data=payload).pull_uint_var()
        except BufferReadError:  # the rest has not arrived yet
            return


def h3_worker(qport: int, streams: int, results: Results, stop: threading.Event) -> None:
    """One HTTP/3 connection keeping ``streams`` requests in flight until GOAWAY."""
    asyncio.run(_h3_session(qport, streams, results, stop))


async def _h3_session(qport: int, streams: int, results: Results, stop: threading.Event) -> None:
    started: list[int] = []
    done_at: dict[int, float] = {}
    try:
        async with connect(
            "127.0.0.1",
            qport,
            configuration=client_configuration(),
            create_protocol=_ShutdownClient,
        ) as client:
            c: _ShutdownClient = client  # type: ignore[assignment]
            inflight: set[asyncio.Future[Any]] = set()
            deadline = time.monotonic() + 120  # a hang ends here, counted below
            while not c.terminated.is_set() and time.monotonic() < deadline:
                while c.goaway is None and not stop.is_set() and len(inflight) < streams:
                    sid = c.start(
                        "POST",
                        "/predict",
                        body=BODY,
                        headers=[(b"content-type", b"application/json")],
                    )
                    started.append(sid)
                    fut = c.done[sid]
                    fut.add_done_callback(
                        lambda _f, sid=sid: done_at.setdefault(sid, time.monotonic())
                    )
                    inflight.add(fut)
                if not inflight and (c.goaway is not None or stop.is_set()):
                    break
                waiter = asyncio.ensure_future(c.terminated.wait())
                finished, _ = await asyncio.wait(
                    [*inflight, waiter], timeout=5, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                inflight -= finished
            if c.goaway is not None:
                with results.lock:
                    results.goaways.append(c.goaway)
            # The server closes once its in-flight streams are answered.
            await asyncio.wait_for(c.terminated.wait(), 60)
            if c.close_code not in (None, H3_NO_ERROR):
                results.record(
                    "h3 closed with an error",
                    f"HTTP/3 closed with {c.close_code:#x}: {c.close_reason}",
                )
            _h3_tally(c, c.goaway, started, done_at, results)
    except Exception as exc:  # any failure of the client is a finding, not a crash
        results.record("h3 connection failed", f"HTTP/3: {type(exc).__name__}: {exc}")


def _h3_tally(
    c: H3Client,
    goaway: int | None,
    started: list[int],
    done_at: dict[int, float],
    results: Results,
) -> None:
    first_unprocessed = goaway if goaway is not None else 1 << 62
    for sid in started:
        r = c.responses[sid]
        accepted = sid < first_unprocessed
        complete = c.done[sid].done() and r.reset is None and r.status
        if complete:
            problem = _check_answer(r.status, r.body)
            if not accepted:
                problem = problem or f"stream {sid} at or above GOAWAY's {goaway} was answered"
            results.record(f"answered h3 {r.status}", problem, at=done_at.get(sid))
        elif not accepted:
            if r.reset not in (None, H3_REQUEST_REJECTED):
                results.record("h3 refused badly", f"stream {sid} after GOAWAY reset {r.reset:#x}")
            else:
                results.record("h3 not accepted (at or above GOAWAY)")
        elif r.reset is not None:
            results.record("h3 reset", f"stream {sid} (< {goaway}) reset with {r.reset:#x}")
        else:
            results.record(
                "h3 lost",
                f"stream {sid} (< GOAWAY {goaway}) unanswered: status {r.status}, "
                f"{len(r.body)} body bytes, connection closed",
            )


# -- the run ------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} at startup")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready within {timeout:g} s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    qport = free_port(socket.SOCK_DGRAM)
    cmd = [
        sys.executable,
        "-m",
        "rawserve",
        "--http-port",
        str(port),
        "--port",
        "-1",
        # HTTP/3 on its own UDP port (the development certificate), or off.
        "--quic-port",
        str(qport if args.h3 else 0),
        "--no-cache",
        "--log-level",
        "warning",
        "--graceful-timeout",
        str(args.graceful_timeout),
        *args.server_args,
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    results = Results()
    stop = threading.Event()
    try:
        wait_ready(port, proc, args.startup_timeout)
        threads = (
            [
                threading.Thread(target=h1_worker, args=(port, results, stop), daemon=True)
                for _ in range(args.h1)
            ]
            + [
                threading.Thread(
                    target=h2_worker, args=(port, args.streams, results, stop), daemon=True
                )
                for _ in range(args.h2)
            ]
            + [
                threading.Thread(
                    target=h3_worker, args=(qport, args.streams, results, stop), daemon=True
                )
                for _ in range(args.h3)
            ]
        )
        for t in threads:
            t.start()
        time.sleep(args.load_s)
        with results.lock:
            results.sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=args.graceful_timeout + args.exit_slack + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        exit_s = time.monotonic() - results.sigterm_at
        for t in threads:
            t.join(timeout=10)
        stop.set()
        hung = sum(t.is_alive() for t in threads)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    failures = list(results.failures)
    if exit_s > args.graceful_timeout + args.exit_slack:
        failures.append(
            f"the process took {exit_s:.2f} s to exit (graceful timeout {args.graceful_timeout} s)"
        )
    if proc.returncode not in (0, -signal.SIGTERM):
        failures.append(f"the process exited with status {proc.returncode}")
    if hung:
        failures.append(f"{hung} client thread(s) still waiting after the server exited")
    if len(results.goaways) < args.h2 + args.h3:
        failures.append(
            f"GOAWAY came on {len(results.goaways)} of {args.h2 + args.h3} HTTP/2 and "
            "HTTP/3 connections"
        )
    answered = sum(n for k, n in results.outcomes.items() if k.startswith("answered"))
    if not results.after_sigterm:
        failures.append("no request was answered after SIGTERM: raise --load-s or the load")
    tracebacks = stderr.count("Traceback")
    if tracebacks:
        failures.append(f"{tracebacks} traceback(s) in the server's log")
    return {
        "ok": not failures,
        "answered": answered,
        "answered_before_sigterm": answered - results.after_sigterm,
        "answered_after_sigterm": results.after_sigterm,
        "outcomes": dict(sorted(results.outcomes.items())),
        "goaway_last_stream_ids": results.goaways,
        "exit_s": round(exit_s, 3),
        "exit_status": proc.returncode,
        "failures": failures,
        "server_log_tail": stderr.splitlines()[-20:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h1", type=int, default=8, help="HTTP/1.1 connections (8)")
    parser.add_argument("--h2", type=int, default=2, help="HTTP/2 connections (2)")
    parser.add_argument("--h3", type=int, default=2, help="HTTP/3 connections (2)")
    parser.add_argument(
        "--streams", type=int, default=16, help="streams in flight per h2 or h3 connection (16)"
    )
    parser.add_argument("--load-s", type=float, default=2.0, help="load before SIGTERM (2)")
    parser.add_argument("--graceful-timeout", type=float, default=10.0, help="(10)")
    parser.add_argument(
        "--exit-slack", type=float, default=1.0, help="allowed beyond the graceful timeout (1)"
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="(60)")
    parser.add_argument(
        "server_args", nargs="*", help="more rawserve flags, after --, e.g. -- --model-workers 2"
    )
    args = parser.parse_args(argv)
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
