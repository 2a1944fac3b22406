"""The access record alone: ``AccessLog.emit`` timed with the arguments of a real in-process
request (``bench/inproc.py``'s app and canned upstream), µs per call, median of rounds. The
loop turn's log flush is included once per 16 calls (a burst), or per call with ``--flush``.

    .venv/bin/python bench/access_emit.py                   # this tree, json and sse
    .venv/bin/python bench/access_emit.py --src /tmp/base   # another tree (run both, compare)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", default=str(HERE.parent))
    p.add_argument("--shapes", default="json,sse")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--flush", action="store_true", help="a loop turn (and flush) per call")
    args = p.parse_args()
    sys.path.insert(0, str(HERE))
    import inproc

    app = inproc.build(Path(args.src))
    access = app.services.access
    emit = access.emit
    every = 0 if args.flush else 15

    async def measure(shape: str) -> list[float]:
        seen: dict[str, Any] = {}

        def spy(**kw: Any) -> None:
            seen.update(kw)
            emit(**kw)

        access.emit = spy
        body = inproc.BODY_JSON % (b"auto", b"" if shape == "json" else b',"stream":true')
        for _ in range(50):
            await inproc.one(app, body)
        access.emit = emit
        out = []
        for _ in range(args.rounds):
            t0 = time.process_time()
            for i in range(args.n):
                emit(**seen)
                if not i & every:
                    await asyncio.sleep(0)
            out.append((time.process_time() - t0) / args.n * 1e6)
        return out

    for shape in args.shapes.split(","):
        res = asyncio.run(measure(shape))
        rounds = ", ".join(f"{x:.1f}" for x in res)
        print(f"emit {shape}: {statistics.median(res):.2f} µs (rounds: {rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
