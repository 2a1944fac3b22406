"""What session affinity costs per request, in process: the session key and the pin.

    .venv/bin/python bench/affinity_cost.py                  # µs per request, median of 5
    .venv/bin/python bench/affinity_cost.py --src DIR        # another source tree (A/B)
    GLM_GATEWAY_REDIS_URL=redis://127.0.0.1:6379/15 .venv/bin/python bench/affinity_cost.py
                                                             # the Redis backend

The app and the canned upstream of ``bench/inproc.py`` (the shipped config, auth, metrics,
in-memory state unless ``GLM_GATEWAY_REDIS_URL`` is set), driven with agent-shaped chat bodies:
a ``--prompt-kb`` system prompt and one user turn, no session header, so the session is keyed
by a hash of that prefix. Two workloads, each with affinity on and off (off: the router is
given no Affinity, which is what ``routing.affinity.enabled: false`` builds):

    turns     the same body every time: one session, pinned after its first request
    one-shot  a different user turn every time: every request a new session
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inproc import BEARER, build

RULE = "Read the file before editing it; keep the diff small; run the tests after. "


def bodies(kb: int, n: int, tag: str = "") -> list[bytes]:
    """``n`` bodies whose user turns carry ``tag`` and a number; with no tag, one body."""
    import orjson

    system = "You are a coding agent. " + RULE * (kb * 1024 // len(RULE))
    result = "tests/x.py ..F. [100%]\n" * 12
    out = []
    for i in range(n if tag else 1):
        msgs = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"task {tag}{i}: $ pytest -q\n{result}"},
        ]
        out.append(orjson.dumps({"model": "auto", "messages": msgs, "max_tokens": 256}))
    return out


async def answer(app: Any, body: bytes) -> float:
    """One request through the ASGI app; seconds until its answer's last byte was sent (the
    client's wait: what follows, settling with shared state, is not in it)."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *BEARER],
    }
    started, done = time.perf_counter(), [0.0]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.body" and not msg.get("more_body"):
            done[0] = time.perf_counter()
        elif msg["type"] == "http.response.start":
            assert msg["status"] == 200, msg

    await app(scope, receive, send)
    await asyncio.sleep(0)
    return done[0] - started


async def run(app: Any, sent: list[bytes], n: int) -> tuple[float, float]:
    """(CPU µs per request, median µs until the answer was out) over ``n`` requests."""
    for b in sent[:50]:  # warm up
        await answer(app, b)
    t0 = time.process_time()
    waits = [await answer(app, sent[i % len(sent)]) for i in range(n)]
    return (time.process_time() - t0) / n * 1e6, statistics.median(waits) * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", default=str(Path(__file__).resolve().parent.parent))
    p.add_argument("--n", type=int, default=2000, help="requests per measurement")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--prompt-kb", type=int, default=20)
    args = p.parse_args()
    app = build(Path(args.src).resolve())
    router = app.services.router
    affinity = router._affinity
    import uvloop

    loop = uvloop.new_event_loop()
    tags = (f"m{k}-" for k in itertools.count())

    def turns() -> list[bytes]:
        return bodies(args.prompt_kb, 1)

    def one_shot() -> list[bytes]:  # sessions never seen before, in every measurement
        return bodies(args.prompt_kb, args.n + 50, next(tags))

    work: dict[str, Callable[[], list[bytes]]] = {"turns": turns, "one-shot": one_shot}
    for name, make in work.items():
        on, off = [], []
        for _ in range(args.rounds):  # on and off alternate: the pairs share the noise
            router._affinity = affinity
            on.append(loop.run_until_complete(run(app, make(), args.n)))
            router._affinity = None
            off.append(loop.run_until_complete(run(app, make(), args.n)))
        router._affinity = affinity
        for i, what in enumerate(("CPU", "answer wait")):
            added = statistics.median(a[i] - b[i] for a, b in zip(on, off, strict=True))
            print(f"{name:8} {what:11}: affinity on {statistics.median(a[i] for a in on):6.1f},"
                  f" off {statistics.median(b[i] for b in off):6.1f} µs/request; affinity adds "
                  f"{added:5.1f} (median of paired rounds)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
