"""Instructions of one state ``before`` + ``after`` pair, the backend alone (no gateway).

CONC pairs are started together, round after round (the way ``bench/inproc.py --lockstep``
starts requests), against the Redis at ``--redis`` (a prefix of its own) or in memory; under
callgrind, twice with different numbers of pairs, the difference over the extra pairs:

    .venv/bin/python bench/state_pair.py --instructions            # Redis, 16 and 4 at once
    .venv/bin/python bench/state_pair.py --instructions --memory   # the in-memory backend
    .venv/bin/python bench/state_pair.py --instructions --src DIR  # another source tree

Fewer pairs at once means more batches per pair: the two figures apart show the per-batch cost
of the Redis auto-pipeline against the per-call one.

    .venv/bin/python bench/state_pair.py --server   # the Redis server's own instructions per
                                                    # pair (its Lua scripts), redis-server under
                                                    # callgrind; the gateway runs natively
    .venv/bin/python bench/state_pair.py --server --key   # a key with rpm, tpm and a budget

The pairs are shaped as the HTTP benchmark's requests are: 8 candidates, a session whose pin
may reorder the first two, no key (``--key``: one with limits, so its windows are read and
written). ``--server`` is the cost every replica adds to the one Redis they share, and the time
a batch waits on it.
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


def zero_and_dump(pid: int, dump: bool) -> int:
    """Zero the counters of the callgrind run ``pid`` (``dump``: write them first and return
    the instructions since the last zero)."""
    if not dump:
        subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
        return 0
    out = Path(f"/tmp/state_pair.{pid}")
    before = set(out.parent.glob(f"{out.name}.*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    for _ in range(100):
        new = set(out.parent.glob(f"{out.name}.*")) - before
        if new:
            time.sleep(0.2)  # written whole
            for line in next(iter(new)).read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise SystemExit("callgrind wrote no dump")


async def pairs(
    src: str, n: int, conc: int, redis: str | None, key: bool = False, server: int = 0
) -> float:
    """CPU µs per pair after the warm-up (``server``: the pid of a redis-server under
    callgrind, whose instructions per pair are answered instead)."""
    sys.path.insert(0, src)
    from gateway.catalogue.schema import BreakerConfig
    from gateway.state.base import DeploymentAsk, KeyAsk, Outcome, Report, Ticket
    from gateway.state.memory import MemoryState
    from gateway.state.redis import RedisState

    state: Any
    if redis is None:
        state = MemoryState(BreakerConfig())
    else:  # no call answered late in the ~50x slower process under callgrind
        prefix = f"pair{os.getpid()}"
        state = RedisState(redis, BreakerConfig(), prefix=prefix, timeout_ms=600_000)
    asks = tuple(DeploymentAsk(f"p/m{i}") for i in range(8))
    pinnable = (asks[0].target_id, asks[1].target_id)
    done = Outcome("p/m0", True, 0.01)
    ask = None
    if key:
        ask = KeyAsk("k1", rpm=10**9, tpm=10**12, budget_micros=10**15, cost_micros=50)
        if redis is not None:  # a key Redis knows (else every request is refused: revoked)
            from gateway.tenancy.keys import KeyRecord

            await state.put_key(KeyRecord("k1", "bench", "0" * 64, "sk-glm-k1-", time.time()))
    count = 0

    async def one() -> None:
        nonlocal count
        count += 1
        now = time.time()
        ticket = Ticket(asks, 400, ask, session=f"s{count % 64}", pinnable=pinnable)
        view = await state.before(ticket, now)
        await state.after(Report((done,), (), view.lease, None, 40, 30), now)
        await asyncio.sleep(0)

    for _ in range(20):  # warm-up
        await asyncio.gather(*(one() for _ in range(conc)))
    if server:
        await state._auto.settled()  # the warm-up's reports are not counted
        zero_and_dump(server, False)
    started = time.process_time()
    for _ in range(n // conc):
        await asyncio.gather(*(one() for _ in range(conc)))
    spent = time.process_time() - started
    if server:
        await state._auto.settled()
    await state.aclose()
    if server:
        return zero_and_dump(server, True) / (n // conc * conc)
    return spent / (n // conc * conc) * 1e6


def redis_under_callgrind() -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of its own under callgrind (nothing saved), and its URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["valgrind", "--tool=callgrind", "--dump-instr=no"]
    argv += ["--callgrind-out-file=/tmp/state_pair.%p"]
    argv += ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.25)
    proc.kill()
    raise SystemExit("redis-server under callgrind did not start")


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
    p.add_argument("--server", action="store_true", help="count redis-server's instructions")
    p.add_argument("--key", action="store_true", help="a key with rpm, tpm and a budget")
    p.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    redis = None if args.memory else args.redis
    if args.server_pid:
        import uvloop

        n, conc = args.n, int(args.conc.split(",")[0])
        print(uvloop.run(pairs(args.src, n, conc, redis, args.key, args.server_pid)))
        return 0
    if args.server:
        proc, url = redis_under_callgrind()
        try:
            for conc in [int(c) for c in args.conc.split(",")]:
                argv = [sys.executable, __file__, "--src", args.src, "--conc", str(conc)]
                argv += ["--n", str(args.n // 4), "--redis", url, "--server-pid", str(proc.pid)]
                argv += ["--key"] if args.key else []
                out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
                per = round(float(out.split()[-1]))
                print(f"{conc} at once: {per:,} redis-server instructions/pair ({args.src})")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            for f in Path("/tmp").glob(f"state_pair.{proc.pid}*"):
                f.unlink()
        return 0
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
