"""Where an urgent request's time goes under a bulk load: sequential
``priority: u=0`` POSTs on one keep-alive connection, first alone, then while
``h2load`` holds a ``priority: u=7`` load, each split by the server's
``Server-Timing`` into queue (waiting for a batch), infer (its batch's run)
and rest (everything else: reading, parsing, answering, the loop's backlog).

    python tools/priority_probe.py --port 8000 --body body.json --seconds 10

The server is yours to start (docs/PERFORMANCE.md, priority isolation, pins
it to core 0 with the model B from tools/make_models.py); the load runs on
``--client-cpu``. Prints p50 / p90 / p99 of each part, unloaded and loaded.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

TIMING = re.compile(r"(queue|infer);dur=([\d.]+)")


def probe(port: int, body: bytes, seconds: float) -> list[tuple[float, float, float, float]]:
    """(total, queue, infer, rest) in ms per probe, for ``seconds``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json", "priority": "u=0"}
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        conn.request("POST", "/predict", body, headers)
        response = response_of(conn)
        total = (time.perf_counter() - t) * 1000
        parts = dict(TIMING.findall(response.getheader("server-timing") or ""))
        if response.status != 200 or set(parts) != {"queue", "infer"}:
            raise SystemExit(f"probe answered {response.status} without Server-Timing")
        queue, infer = float(parts["queue"]), float(parts["infer"])
        out.append((total, queue, infer, total - queue - infer))
    conn.close()
    return out


def response_of(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
    response = conn.getresponse()
    response.read()
    return response


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, rows: list[tuple[float, float, float, float]]) -> str:
    columns = list(zip(*rows, strict=True))
    parts = [
        f"{label} {percentile(list(c), 0.5):.1f} / {percentile(list(c), 0.9):.1f} / "
        f"{percentile(list(c), 0.99):.1f}"
        for label, c in zip(("total", "queue", "infer", "rest"), columns, strict=True)
    ]
    return f"{name}: {len(rows)} probes, ms p50 / p90 / p99: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the server's HTTP port")
    parser.add_argument("--body", type=Path, required=True, help="the /predict JSON body")
    parser.add_argument("--seconds", type=float, default=10.0, help="loaded probing (10)")
    parser.add_argument("--connections", type=int, default=32, help="u=7 load connections")
    parser.add_argument("--client-cpu", default="1", help="taskset CPU list for the load")
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        print("priority_probe: h2load not found (Debian: nghttp2-client)", file=sys.stderr)
        return 1
    body = args.body.read_bytes()
    print(summary("unloaded", probe(args.port, body, args.seconds / 2)))
    load = [
        "h2load", "-D", str(int(args.seconds + 2)), "--h1", "-c", str(args.connections),
        "-m", "1", "-H", "content-type: application/json", "-H", "priority: u=7",
        "-d", str(args.body), f"http://127.0.0.1:{args.port}/predict",
    ]  # fmt: skip
    if shutil.which("taskset"):
        load = ["taskset", "-c", args.client_cpu, *load]
    loader = subprocess.Popen(load, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        loaded = probe(args.port, body, args.seconds)
        out, _ = loader.communicate(timeout=args.seconds + 60)
    finally:
        if loader.poll() is None:
            loader.kill()
            loader.wait()
    print(summary("loaded", loaded))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    if codes is None or rps is None:
        print(f"priority_probe: the load did not run:\n{out}", file=sys.stderr)
        return 1
    print(f"u=7 load: {float(rps.group(1)):,.0f} req/s, {codes.group(1)} 2xx, "
          f"{sum(int(codes.group(i)) for i in (2, 3, 4))} other")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
