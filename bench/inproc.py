"""The gateway's own Python cost per request, in process, without any network.

The shipped config (auth on, capability routing, metrics, in-memory state, access log to
/dev/null) is driven through the real ASGI app with a canned upstream provider that answers
at once, so what is timed is only the gateway's code: parse, needs, plan, admission, request
adaptation, answer checks, settlement, metrics, access log. uvicorn, aiohttp and the kernel
are not in it (``bench/run.py --full`` measures those, against the floor).

    .venv/bin/python bench/inproc.py                 # µs per request, json and sse, median of 5
    .venv/bin/python bench/inproc.py --profile json  # cProfile, top functions by own time
                                                     # (--sort cumulative --top 60: by inclusive)
    .venv/bin/python bench/inproc.py --src DIR       # another source tree
    .venv/bin/python bench/inproc.py --ab DIR        # this tree and DIR alternated, one process
                                                     # per round each, paired ratio (A/B)
    .venv/bin/python bench/inproc.py --instructions  # instructions per request under callgrind
                                                     # (valgrind): the same count whatever else
                                                     # the machine does, to ~1% (~3 min a
                                                     # shape and tree; --ab DIR: both trees)
    GLM_GATEWAY_REDIS_URL=redis://127.0.0.1:6379/15 .venv/bin/python bench/inproc.py --conc 16
                                                     # the Redis backend, 16 in flight
                                                     # (--lockstep --instructions: 16 started
                                                     # together, so the state calls batch the
                                                     # same way under callgrind as natively)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import io
import logging
import os
import pstats
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

MASTER = "bench-master-key"
BODY_JSON = (
    b'{"model":"%s","messages":[{"role":"system","content":"You are a concise assistant. '
    b'Answer in one short paragraph."},{"role":"user","content":"Summarise why a gateway '
    b'should add as little latency as it can."}],"max_tokens":256%s}'
)


def _answers(root: Path) -> tuple[bytes, bytes]:
    nginx = root / "bench" / "nginx"
    return (nginx / "completion.json").read_bytes(), (nginx / "stream.sse").read_bytes()


class CannedProvider:
    """Answers every send at once with the bench's static completion or stream."""

    def __init__(self, completion: bytes, stream: bytes, response_type: Any) -> None:
        self.completion, self.stream, self.resp = completion, stream, response_type
        # nginx hands the stream over in reads of a few events; mimic 4 KB reads.
        self.parts = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]

    async def send(self, target: Any, body: Any, *, stream: bool, **_: Any) -> Any:
        headers = {"Content-Type": "text/event-stream" if stream else "application/json"}
        if not stream:
            return self.resp(200, headers, self.completion)
        return self.resp(200, headers, chunks=self._chunks(), release=_noop)

    async def _chunks(self) -> AsyncIterator[bytes]:
        for p in self.parts:
            yield p

    async def aclose(self) -> None:
        return None


def _noop() -> None:
    return None


def build(root: Path, state_timeout_ms: int | None = None) -> Any:
    sys.path.insert(0, str(root))
    from gateway.app import create_app
    from gateway.cli import resolve_config
    from gateway.providers.base import UpstreamResponse

    os.environ["GLM_GATEWAY_MASTER_KEY"] = MASTER
    packaged = root / "gateway" / "config"  # before the move into the package: root / "config"
    conf = packaged if packaged.is_dir() else root / "config"
    config = resolve_config(str(conf), demo_simulator_url="http://127.0.0.1:9")
    if state_timeout_ms is not None:  # (under callgrind: ~50x slower, and still answered)
        gw = config.gateway
        st = gw.state.model_copy(update={"redis_timeout_ms": state_timeout_ms})
        config = dataclasses.replace(config, gateway=gw.model_copy(update={"state": st}))
    logging.getLogger("glm_gateway").handlers[:] = [logging.FileHandler(os.devnull)]
    logging.getLogger("glm_gateway").setLevel(logging.INFO)
    logging.getLogger("glm_gateway").propagate = False
    app = create_app(config)
    completion, stream = _answers(Path(__file__).resolve().parent.parent)
    canned = CannedProvider(completion, stream, UpstreamResponse)
    app.services.providers["openai"] = canned
    app.services.router._providers = app.services.providers
    import gateway.app

    quiet = getattr(gateway.app, "quiet_gc", None)
    if quiet is not None:  # what the app's lifespan does when serving (not run here)
        quiet()
    return app


BEARER = [(b"authorization", b"Bearer " + MASTER.encode())]


async def one(
    app: Any,
    body: bytes,
    path: str = "/v1/chat/completions",
    auth: list[tuple[bytes, bytes]] = BEARER,
) -> int:
    """One request through the ASGI app (the answer received and dropped); its status."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            *auth,
            (b"content-length", str(len(body)).encode()),
        ],
    }
    sent = [False]
    status = [0]
    gate = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gate.wait()
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            status[0] = msg["status"]

    await app(scope, receive, send)
    gate.set()
    await asyncio.sleep(0)  # one loop turn per request, as under a server (per-turn flushes)
    return status[0]


async def run(app: Any, body: bytes, n: int, conc: int = 1, lockstep: bool = False) -> float:
    """CPU µs per request, ``conc`` requests in flight (> 1: state calls share pipelines).
    ``lockstep``: ``conc`` requests started together, the next ``conc`` once all are done, so
    that Redis state calls batch the same way however fast the process runs (under callgrind:
    16 calls a pipeline at ``--conc 16``, where free-running workers get ~4-9)."""

    async def worker(k: int) -> None:
        for _ in range(k):
            await one(app, body)

    async def rounds(k: int) -> None:
        for _ in range(k):
            await asyncio.gather(*(one(app, body) for _ in range(conc)))

    for _ in range(200):  # warm caches
        assert await one(app, body) == 200
    t0 = time.process_time()
    if lockstep:
        await rounds(n // conc)
    else:
        await asyncio.gather(*(worker(n // conc) for _ in range(conc)))
    return (time.process_time() - t0) / (n // conc * conc) * 1e6


def ab(args: argparse.Namespace) -> int:
    """``--src`` and ``--ab`` alternated, a fresh process per round and tree (imports cannot be
    mixed in one): medians and the median of per-round ratios (ab ÷ src)."""
    import subprocess

    got: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        order = [args.src, args.ab] if r % 2 == 0 else [args.ab, args.src]
        for src in order:
            argv = [sys.executable, __file__, "--src", src, "--rounds", "1", "--n", str(args.n)]
            argv += ["--model", args.model, "--shapes", ",".join(args.shapes)]
            argv += ["--conc", str(args.conc)] + (["--lockstep"] if args.lockstep else [])
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                shape, rest = line.split(": ", 1)
                got.setdefault((shape, src), []).append(float(rest.split(" ", 1)[0]))
    for shape in args.shapes:
        a, b = got[(shape, args.src)], got[(shape, args.ab)]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        print(f"{shape}: src {statistics.median(a):.1f} µs, ab {statistics.median(b):.1f} µs, "
              f"ab ÷ src {statistics.median(ratios):.3f} (rounds: "
              + ", ".join(f"{q:.2f}" for q in ratios) + ")")  # fmt: skip
    return 0


def _collected(argv: list[str]) -> int:
    """Instructions callgrind counted over one run of ``argv`` (startup included)."""
    import subprocess

    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts run to run
    err = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stderr
    for line in err.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise SystemExit(f"no instruction count from callgrind:\n{err[-2000:]}")


def instructions(args: argparse.Namespace) -> int:
    """Instructions per request: two runs that differ only in their number of requests (the
    same start-up and warm-up), under callgrind; the difference over the extra requests."""
    import shutil

    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    small, large = args.n // 3, args.n
    counts: dict[tuple[str, str], int] = {}
    for src in [args.src] + ([args.ab] if args.ab else []):
        for shape in args.shapes:
            got = []
            for n in (small, large):
                argv = [sys.executable, __file__, "--src", src, "--rounds", "1", "--n", str(n)]
                argv += ["--conc", str(args.conc)] + (["--lockstep"] if args.lockstep else [])
                argv += ["--state-timeout-ms", "600000"]  # no Redis call answered late
                got.append(_collected([*argv, "--model", args.model, "--shapes", shape]))
            counts[(shape, src)] = per = (got[1] - got[0]) // (large - small)
            print(f"{shape}: {per:,} instructions/request ({src})", flush=True)
    if args.ab:
        for shape in args.shapes:
            a, b = counts[(shape, args.src)], counts[(shape, args.ab)]
            print(f"{shape}: ab ÷ src {b / a:.3f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", default=str(Path(__file__).resolve().parent.parent))
    p.add_argument("--n", type=int, default=3000, help="requests per measurement")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model", default="auto")
    p.add_argument("--profile", choices=["json", "sse"])
    p.add_argument("--sort", default="tottime", help="--profile order: tottime, cumulative, ...")
    p.add_argument("--top", type=int, default=40, help="--profile: functions shown")
    p.add_argument("--shapes", type=lambda s: s.split(","), default=["json", "sse"])
    p.add_argument("--conc", type=int, default=1, help="requests in flight (Redis batching)")
    p.add_argument(
        "--lockstep", action="store_true", help="--conc requests started together, round by round"
    )
    p.add_argument(
        "--state-timeout-ms",
        type=int,
        help="the Redis state's redis_timeout_ms (--instructions: 600000, so that no call is "
        "answered late and served from local state in the ~50x slower process)",
    )
    p.add_argument("--ab", help="another source tree, alternated round by round with --src")
    p.add_argument(
        "--instructions", action="store_true", help="instructions per request under callgrind"
    )
    args = p.parse_args()
    if args.instructions:
        return instructions(args)
    if args.ab:
        return ab(args)
    app = build(Path(args.src).resolve(), args.state_timeout_ms)
    import uvloop

    loop = uvloop.new_event_loop()  # what `glm-gateway serve` runs on

    bodies = {
        "json": BODY_JSON % (args.model.encode(), b""),
        "sse": BODY_JSON % (args.model.encode(), b',"stream":true'),
    }
    if args.profile:
        body = bodies[args.profile]
        loop.run_until_complete(run(app, body, 500))
        prof = cProfile.Profile()
        prof.enable()
        loop.run_until_complete(run(app, body, args.n, args.conc, args.lockstep))
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
        return 0
    for shape, body in bodies.items():
        if shape not in args.shapes:
            continue
        got = [
            loop.run_until_complete(run(app, body, args.n, args.conc, args.lockstep))
            for _ in range(args.rounds)
        ]
        print(f"{shape}: {statistics.median(got):.1f} µs/request (rounds: "
              + ", ".join(f"{g:.0f}" for g in got) + ")")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
