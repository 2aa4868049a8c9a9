"""Run rawserve's fuzzers (tests/test_fuzz.py: the parsers above the
protocols; tests/test_fuzz_protocols.py: the HTTP/1.1, HTTP/2 and HTTP/3
adapters; the scheduler's random workload in tests/test_scheduler.py; HPACK
decoding against hpack's own in tests/test_http2_hpack.py) for longer than
CI does.

    python tools/fuzz.py --minutes 10
    python tools/fuzz.py --minutes 60 --examples 5000 -k v2

CI runs each fuzzer for a bounded number of examples (RAWSERVE_FUZZ_EXAMPLES,
150 by default, a few seconds in all). This runs rounds of ``--examples``
examples per fuzzer, each round with a fresh seed, until the time is up or a
fuzzer fails. A failure prints hypothesis's minimal failing example and the
seed that reproduces it; turn it into a regular test (the ``found`` cases at
the end of tests/test_fuzz.py) once it is fixed.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to fuzz (default 5)")
    parser.add_argument(
        "--examples", type=int, default=2000, help="examples per fuzzer per round (default 2000)"
    )
    parser.add_argument("-k", default=None, help="only the fuzzers matching this pytest -k")
    args = parser.parse_args(argv)

    end = time.monotonic() + args.minutes * 60
    env = {**os.environ, "RAWSERVE_FUZZ_EXAMPLES": str(args.examples)}
    rounds = 0
    while time.monotonic() < end:
        seed = random.randrange(2**32)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-x",
            f"--hypothesis-seed={seed}",
            "tests/test_fuzz.py",
            "tests/test_fuzz_protocols.py",
            "tests/test_scheduler.py::test_random_workload_keeps_every_invariant",
            "tests/test_http2_hpack.py::test_random_blocks_decode_or_fail_as_hpack",
        ]
        if args.k:
            cmd += ["-k", args.k]
        rounds += 1
        print(f"round {rounds}: seed {seed}, {args.examples} examples per fuzzer", flush=True)
        result = subprocess.run(cmd, cwd=ROOT, env=env)
        if result.returncode:
            print(
                f"a fuzzer failed in round {rounds}; reproduce with:\n"
                f"  RAWSERVE_FUZZ_EXAMPLES={args.examples} {' '.join(cmd[:1])} "
                f"{' '.join(cmd[1:])}",
                file=sys.stderr,
            )
            return 1
    print(f"{rounds} rounds, no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
