"""Server CPU per HTTP/3 request: drive a running server with aioquic's
client and read the server process's CPU time from /proc.

    python tools/h3_cpu.py PORT PID [-n 3000] [-c 16] [--path /predict]

PORT is the server's UDP port, PID the process that owns it (``ss -ulpn``).
The request is the digits model's /predict with one JSON row; the same for
rawserve and for FastAPI on hypercorn (docs/HTTP3.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rawserve.inference.model import bundled_metadata  # noqa: E402
from tests.h3client import h3_connect  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(port: int, pid: int, n: int, concurrency: int, path: str) -> tuple[float, float]:
    row = bundled_metadata()["samples"]["inputs"][0]
    body = json.dumps({"inputs": row}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    async with h3_connect(port) as client:
        for _ in range(100):  # warm up
            r = await client.request("POST", path, body=body, headers=head)
        if r.status != 200:
            raise SystemExit(f"{path} answered {r.status}: {r.body[:200]!r}")
        started, cpu0 = time.perf_counter(), cpu_seconds(pid)
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                r = await client.request("POST", path, body=body, headers=head)
                assert r.status == 200, r.status

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu0
    return n / elapsed, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("pid", type=int)
    parser.add_argument("-n", type=int, default=3000, help="requests (3000)")
    parser.add_argument("-c", type=int, default=16, help="concurrent streams (16)")
    parser.add_argument("--path", default="/predict")
    args = parser.parse_args()
    rps, us = asyncio.run(measure(args.port, args.pid, args.n, args.c, args.path))
    print(f"{rps:.0f} rps, server CPU {us:.0f} us/request")


if __name__ == "__main__":
    main()
