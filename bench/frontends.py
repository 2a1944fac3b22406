"""What the Messages front-end costs over chat: the same upstream answer relayed as an OpenAI
chat stream and as an Anthropic Messages stream, gateway CPU µs per request, in process.

The app, config and canned upstream are :mod:`inproc`'s (auth on, capability routing, metrics,
in-memory state, access log to /dev/null; the bench's static 50-chunk stream, answered at
once). Each round measures chat, then Messages, on the same body content, the same ``model``
and the same ``X-GLM-Providers`` (so the same plan and host dialect); the ratio is taken per
round and its median reported, which cancels most of a shared machine's drift. The host is a
chat-only one (OpenRouter's dialect: chunks parsed and re-encoded, as Z.ai's), so the Messages
request is translated: Z.ai and BigModel would take it natively (``anthropic_base_url``).
Non-streamed answers are measured the same way (``--shapes json,sse``).

    .venv/bin/python bench/frontends.py                      # sse, 7 alternated rounds
    .venv/bin/python bench/frontends.py --shapes json,sse --rounds 9 --n 2000
    .venv/bin/python bench/frontends.py --profile messages   # cProfile of the Messages stream
    .venv/bin/python bench/frontends.py --api responses --ab DIR --repeats 3
        # this tree and DIR alternated, a fresh process each (imports cannot be mixed): the
        # ratio to chat of each, per run, and their medians (a patch's A/B)
    .venv/bin/python bench/frontends.py --api responses --shapes json,sse --instructions
        # instructions per request of chat and of the API under callgrind, and their ratio:
        # the same to ~1% however busy the machine (~3 min a shape and API)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from inproc import MASTER, _collected, build, one

SYSTEM = "You are a concise assistant. Answer in one short paragraph."
USER = "Summarise why a gateway should add as little latency as it can."
TARGET = 1.3
"""The issue's bound: a Messages stream at most 1.3x the gateway CPU of the same chat stream."""


def bodies(
    model: str, stream: bool, providers: str = "openrouter"
) -> dict[str, tuple[str, bytes, list[tuple[bytes, bytes]]]]:
    """API -> (path, body, headers) for the same conversation in each API's shape."""
    chat: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
        "max_tokens": 256,
    }
    messages: dict[str, Any] = {
        "model": model,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": USER}],
        "max_tokens": 256,
    }
    responses: dict[str, Any] = {
        "model": model,
        "instructions": SYSTEM,
        "input": [{"role": "user", "content": USER}],
        "max_output_tokens": 256,
    }
    if stream:
        chat["stream"] = messages["stream"] = responses["stream"] = True
    steer = [(b"x-glm-providers", providers.encode())] if providers else []
    bearer = [(b"authorization", b"Bearer " + MASTER.encode()), *steer]
    keyed = [(b"x-api-key", MASTER.encode()), (b"anthropic-version", b"2023-06-01"), *steer]
    return {
        "chat": ("/v1/chat/completions", orjson.dumps(chat), bearer),
        "messages": ("/v1/messages", orjson.dumps(messages), keyed),
        "responses": ("/v1/responses", orjson.dumps(responses), bearer),
    }


async def run(app: Any, request: tuple[str, bytes, list[tuple[bytes, bytes]]], n: int) -> float:
    """CPU µs per request over ``n`` sequential requests (after 200 to warm up)."""
    path, body, auth = request
    for _ in range(200):
        status = await one(app, body, path, auth)
        assert status == 200, f"{path} answered {status}"
    t0 = time.process_time()
    for _ in range(n):
        await one(app, body, path, auth)
    return (time.process_time() - t0) / n * 1e6


def ab(args: argparse.Namespace) -> int:
    """``--src`` and ``--ab`` alternated ``--repeats`` times (a fresh process per run, the
    order swapped every repeat): each run's ratio to chat per shape, and the medians."""
    got: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):
        for src in [args.src, args.ab] if r % 2 == 0 else [args.ab, args.src]:
            argv = [sys.executable, __file__, "--src", src, "--api", args.api]
            argv += ["--rounds", str(args.rounds), "--n", str(args.n), "--model", args.model]
            argv += ["--providers", args.providers, "--shapes", ",".join(args.shapes)]
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                shape, rest = line.split(": ", 1)
                got.setdefault((shape, src), []).append(float(rest.split("ratio ", 1)[1][:4]))
    for shape in args.shapes:
        a, b = got[(shape, args.src)], got[(shape, args.ab)]
        print(f"{shape}: {args.api} ÷ chat: src {statistics.median(a):.2f} "
              f"({' '.join(f'{x:.2f}' for x in a)}), ab {statistics.median(b):.2f} "
              f"({' '.join(f'{x:.2f}' for x in b)})")  # fmt: skip
    return 0


def instructions(args: argparse.Namespace) -> int:
    """Per shape: chat's and the API's instructions per request, each the difference of two
    callgrind runs that differ only in their request count (``--only``), and their ratio."""
    small, large = args.n // 3, args.n
    for shape in args.shapes:
        per = {}
        for api in ("chat", args.api):
            got = []
            for n in (small, large):
                argv = [sys.executable, __file__, "--src", args.src, "--only", api, "--n", str(n)]
                argv += ["--model", args.model, "--providers", args.providers, "--shapes", shape]
                got.append(_collected(argv))
            per[api] = (got[1] - got[0]) // (large - small)
        ratio = per[args.api] / per["chat"]
        verdict = "within" if ratio <= TARGET else "ABOVE"
        print(f"{shape}: chat {per['chat']:,} instructions/request, {args.api} "
              f"{per[args.api]:,}, ratio {ratio:.3f} ({verdict} {TARGET})", flush=True)  # fmt: skip
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", default=str(Path(__file__).resolve().parent.parent))
    p.add_argument("--n", type=int, default=2000, help="requests per measurement")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--model", default="auto", help="the same `model` for both APIs")
    p.add_argument("--providers", default="openrouter", help="X-GLM-Providers for both APIs")
    p.add_argument("--shapes", type=lambda s: s.split(","), default=["sse"])
    p.add_argument("--profile", choices=["chat", "messages", "responses"])
    p.add_argument("--api", default="messages", choices=["messages", "responses"],
                   help="the front-end compared with chat")  # fmt: skip
    p.add_argument("--top", type=int, default=35)
    p.add_argument("--ab", help="another source tree, alternated run by run with --src")
    p.add_argument("--repeats", type=int, default=3, help="--ab: runs of each tree")
    p.add_argument("--instructions", action="store_true", help="counts under callgrind")
    p.add_argument("--only", choices=["chat", "messages", "responses"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ab:
        return ab(args)
    if args.instructions:
        return instructions(args)
    app = build(Path(args.src).resolve())
    import uvloop

    loop = uvloop.new_event_loop()  # what `glm-gateway serve` runs on
    if args.only:  # one run of one API (what --instructions counts)
        request = bodies(args.model, args.shapes[0] == "sse", args.providers)[args.only]
        loop.run_until_complete(run(app, request, args.n))
        return 0
    if args.profile:
        request = bodies(args.model, True, args.providers)[args.profile]
        loop.run_until_complete(run(app, request, 300))
        prof = cProfile.Profile()
        prof.enable()
        loop.run_until_complete(run(app, request, args.n))
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
        return 0
    for shape in args.shapes:
        requests = bodies(args.model, shape == "sse", args.providers)
        chat, messages, ratios = [], [], []
        for _ in range(args.rounds):
            c = loop.run_until_complete(run(app, requests["chat"], args.n))
            m = loop.run_until_complete(run(app, requests[args.api], args.n))
            chat.append(c)
            messages.append(m)
            ratios.append(m / c)
        ratio = statistics.median(ratios)
        verdict = "within" if ratio <= TARGET else "ABOVE"
        print(
            f"{shape}: chat {statistics.median(chat):.1f} µs/request, {args.api} "
            f"{statistics.median(messages):.1f} µs/request, ratio {ratio:.2f} "
            f"({verdict} {TARGET}; per-round ratios: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
