"""Instructions of one state ``before`` + ``after`` pair, the backend alone (no gateway).

CONC pairs are started together, round after round (the way ``bench/inproc.py --lockstep``
starts requests), against the Redis at ``--redis`` (a prefix of its own) or in memory; under
callgrind, twice with different numbers of pairs, the difference over the extra pairs:

    .venv/bin/python bench/state_pair.py --instructions            # Redis, 16 and 4 at once
    .venv/bin/python bench/state_pair.py --instructions --memory   # the in-memory backend
    .venv/bin/python bench/state_pair.py --instructions --src DIR  # another source tree

Fewer pairs at once means more batches per pair: the two figures apart show the per-batch cost
of the Redis auto-pipeline against the per-call one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


async def pairs(src: str, n: int, conc: int, redis: str | None) -> float:
    """CPU µs per pair after the warm-up."""
    sys.path.insert(0, src)
    from gateway.catalogue.schema import BreakerConfig
    from gateway.state.base import DeploymentAsk, Outcome, Report, Ticket
    from gateway.state.memory import MemoryState
    from gateway.state.redis import RedisState

    state: Any
    if redis is None:
        state = MemoryState(BreakerConfig())
    else:  # no call answered late in the ~50x slower process under callgrind
        prefix = f"pair{os.getpid()}"
        state = RedisState(redis, BreakerConfig(), prefix=prefix, timeout_ms=600_000)
    asks = tuple(DeploymentAsk(f"p/m{i}") for i in range(8))
    done = Outcome("p/m0", True, 0.01)

    async def one() -> None:
        now = time.time()
        view = await state.before(Ticket(asks, 400), now)
        await state.after(Report((done,), (), view.lease, None, 40, 0), now)
        await asyncio.sleep(0)

    for _ in range(20):  # warm-up
        await asyncio.gather(*(one() for _ in range(conc)))
    started = time.process_time()
    for _ in range(n // conc):
        await asyncio.gather(*(one() for _ in range(conc)))
    spent = time.process_time() - started
    await state.aclose()
    return spent / (n // conc * conc) * 1e6


def collected(argv: list[str]) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    err = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stderr
    for line in err.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise SystemExit(f"no instruction count from callgrind:\n{err[-2000:]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", default=str(Path(__file__).resolve().parent.parent))
    p.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    p.add_argument("--memory", action="store_true", help="the in-memory backend")
    p.add_argument("--conc", default="16,4", help="pairs at once, comma-separated")
    p.add_argument("--n", type=int, default=1600, help="pairs per measurement")
    p.add_argument("--instructions", action="store_true", help="count under callgrind")
    args = p.parse_args()
    redis = None if args.memory else args.redis
    for conc in [int(c) for c in args.conc.split(",")]:
        if not args.instructions:
            import uvloop

            per_pair = uvloop.run(pairs(args.src, args.n, conc, redis))
            print(f"{conc} at once: {per_pair:.1f} µs/pair (CPU)")
            continue
        got = []
        for n in (args.n // 5, args.n):
            argv = [sys.executable, __file__, "--src", args.src, "--conc", str(conc)]
            argv += ["--n", str(n), "--redis", args.redis] + (["--memory"] if args.memory else [])
            got.append(collected(argv))
        per = (got[1] - got[0]) // (args.n - args.n // 5)
        print(f"{conc} at once: {per:,} instructions/pair ({args.src})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
