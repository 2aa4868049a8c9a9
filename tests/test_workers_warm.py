"""``--workers N``: a worker takes connections only once its models are warm.

The model here is tools/make_models.py's model B (34 MiB) with
``--max-batch-size 1024``: eleven warm-up runs of up to 1,024 rows, a warm-up
long enough that requests reaching a cold worker would be seen. Clients post
to ``/predict`` on new connections (the kernel spreads them over the
workers' sockets) from before the supervisor has even bound the port, and
while a worker is killed and replaced; none may be answered 503 "models are
still loading": until a worker is warm, what the kernel hands its sockets
waits in their backlogs."""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_workers import READY_TIMEOUT_S, Served, wait_until

ROOT = Path(__file__).resolve().parent.parent
MAX_BATCH_SIZE = "1024"
# Bounds that only catch a hang: a request queued for a cold worker waits
# out its warm-up.
REQUEST_TIMEOUT_S = 60.0
HAMMER_THREADS = 3


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("make_models", ROOT / "tools/make_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path: Path = module.make_mlp(tmp_path_factory.mktemp("models") / "mlp.onnx")
    return path


def free_port() -> int:
    """A port nobody holds now, so that clients can start before the server
    has bound it (and be refused until then). Taken below the ephemeral
    range: the clients' own connections, refused by the hundred while the
    server starts, take their source ports from that range, and one could
    land on the very port the server is about to bind."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lowest_ephemeral = int(f.read().split()[0])
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(10_000, min(lowest_ephemeral, 32_768))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


class Hammer:
    """Threads posting one row to /predict, each request on a new connection,
    until stopped. Every outcome is kept with the phase the test was in when
    the request was sent: its status and detail, "refused" (nothing listening
    yet) or the transport error (a connection lost with a killed worker)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.phase = 0
        self.outcomes: list[tuple[int, str]] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(HAMMER_THREADS)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        body = {"inputs": [[0.5] * 256]}
        # No keep-alive: every request a new connection, a new source port.
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
            while not self._stop.is_set():
                phase = self.phase
                try:
                    r = client.post(f"{self.url}/predict", json=body)
                    outcome = str(r.status_code)
                    if r.status_code != 200:
                        outcome += " " + r.text
                except httpx.ConnectError as exc:
                    refused = "refused" in str(exc).lower()
                    outcome = "refused" if refused else f"error ConnectError {exc}"
                    if refused:
                        self._stop.wait(0.01)  # not bound yet: no need to spin
                except httpx.TransportError as exc:
                    outcome = f"error {type(exc).__name__}"
                with self._changed:
                    self.outcomes.append((phase, outcome))
                    self._changed.notify_all()

    def wait_for(self, check: Callable[[list[tuple[int, str]]], bool], what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: check(self.outcomes), READY_TIMEOUT_S):
                raise AssertionError(f"{what}; outcomes: {self.summary()}")

    def answered_in(self, phase: int) -> int:
        return sum(1 for p, o in self.outcomes if p == phase and o == "200")

    def snapshot(self) -> list[tuple[int, str]]:
        """The outcomes so far, while the clients go on."""
        with self._changed:
            return list(self.outcomes)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for p, o in self.outcomes:
            key = f"phase {p}: {o[:80]}"
            counts[key] = counts.get(key, 0) + 1
        return "\n".join(f"{n:6d}  {key}" for key, n in sorted(counts.items()))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(REQUEST_TIMEOUT_S + 5)
            assert not t.is_alive(), "a client is stuck"


@pytest.fixture
def served_cold(mlp: Path) -> Iterator[tuple[Served, Hammer]]:
    """The server starting, with clients posting from before it listens."""
    port = free_port()
    hammer = Hammer(f"http://127.0.0.1:{port}")
    served = Served(
        "--workers",
        "2",
        "--no-cache",
        "--model",
        f"mlp={mlp}",
        "--max-batch-size",
        MAX_BATCH_SIZE,
        "--http-port",
        str(port),
    )
    try:
        yield served, hammer
    finally:
        hammer.stop()
        if served.proc.poll() is None:
            served.stop()
        if served.proc.poll() is None:
            served.proc.kill()


def not_ready_answers(hammer: Hammer) -> list[str]:
    return [o for _, o in hammer.outcomes if o.startswith("503")]


def test_no_request_reaches_a_worker_still_warming_up_at_start_or_after_a_kill(
    served_cold: tuple[Served, Hammer],
) -> None:
    """One server for both halves: its start with clients posting from before
    it listens, then a worker killed and replaced under the same clients (a
    second start of model B's warm-up would only repeat the first half)."""
    served, hammer = served_cold
    # -- at start: phases 0 (before the banner) and 1 (after it) -------------------
    served.ready()  # the banner: every worker serving
    hammer.phase = 1
    # Clients sent requests all along; some after the banner too.
    hammer.wait_for(lambda _: hammer.answered_in(1) >= 30, "answers after the banner")
    at_start = hammer.snapshot()
    assert [o for _, o in at_start if o.startswith("503")] == [], hammer.summary()
    # Refused only before the supervisor bound the port; never lost.
    assert {o for _, o in at_start} <= {"200", "refused"}, hammer.summary()
    # Each worker answered /predict: the kernel spread the connections.
    counts = wait_until(
        lambda: (
            (t := served.per_worker("rawserve_requests_total", route="/predict"))
            and len(t) == 2
            and t
        ),
        "both workers' /predict counts",
    )
    assert all(n > 0 for n in counts.values()), counts
    # Nobody was ever told the models were loading, not even /readyz.
    with httpx.Client() as c:
        assert c.get(f"{served.url}/readyz").status_code == 200

    # -- a replaced worker: phases 2 (before the kill), 3 (until the
    # replacement serves) and 4 (after) -----------------------------------------------
    served.wait_ready()
    hammer.phase = 2
    hammer.wait_for(lambda _: hammer.answered_in(2) >= 20, "answers before the kill")
    victim = served.pids[0]
    hammer.phase = 3
    os.kill(victim, signal.SIGKILL)
    served.wait_for(
        lambda lines: any("worker 0 (pid" in x and "serving again" in x for x in lines),
        READY_TIMEOUT_S,
    )
    hammer.phase = 4
    hammer.wait_for(lambda _: hammer.answered_in(4) >= 60, "answers after the replacement")
    # The replacement answered some of them (its counts start from 0).
    wait_until(
        lambda: served.per_worker("rawserve_requests_total", route="/predict").get("0", 0) > 0,
        "the replacement answering /predict",
    )
    hammer.stop()
    assert not_ready_answers(hammer) == [], hammer.summary()
    # Only requests on the killed worker's connections may be lost: those
    # sent before the replacement was up.
    lost = {o for p, o in hammer.outcomes if 1 < p < 4 and o != "200"}
    assert all(o.startswith("error") for o in lost), hammer.summary()
    assert {o for p, o in hammer.outcomes if p < 2} <= {"200", "refused"}, hammer.summary()
    assert {o for p, o in hammer.outcomes if p == 4} == {"200"}, hammer.summary()
    assert hammer.answered_in(3) > 0, hammer.summary()
