"""Micro-benchmark: needs + plan per request over the 16-variant catalogue (µs p50/p99).

Every deployment is made usable (the demo rewrite, as ``serve --demo`` does), so the planner
sees the whole catalogue. Bodies are realistic: plain chat, tools, vision, json_schema, a long
conversation (the same one every time, and with a new last turn every time: a client's next
turn), a pinned model, an alias, declared headers. Timed: ``resolve_needs`` + ``plan`` (what the
hot path runs between parsing the body and calling the upstream: ``explain=False`` where the
planner has it), and the orjson parse separately. Prints a markdown table.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import resolve_needs
from gateway.routing.planner import plan

ROOT = Path(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or Path(__file__).parents[1])
ITER = 20_000
WARM = 1_000

_USER = {
    "role": "user",
    "content": "Summarise why a gateway should add as little latency as it can.",
}
_SYS = {"role": "system", "content": "You are a concise assistant."}
_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
_IMAGE = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ],
}
_LONG = [_SYS] + [
    {"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 120 + str(i)}
    for i in range(40)
]


def _next_turn(i: int) -> dict[str, Any]:
    """The long conversation with a new last user turn each call (the history is resent)."""
    turn = {"role": "user", "content": f"Turn {i}: " + "and now what about this? " * 24}
    return {"model": "auto", "messages": [*_LONG, turn]}


Body = dict[str, Any] | Callable[[int], dict[str, Any]]
CASES: list[tuple[str, Body, dict[str, str]]] = [
    ("auto, plain chat", {"model": "auto", "messages": [_SYS, _USER]}, {}),
    (
        "auto, stream, max_tokens",
        {"model": "auto", "messages": [_SYS, _USER], "stream": True, "max_tokens": 512},
        {},
    ),
    ("auto, tools", {"model": "auto", "messages": [_USER], "tools": [_TOOL]}, {}),
    ("auto, image (vision)", {"model": "auto", "messages": [_IMAGE]}, {}),
    (
        "auto, json_schema",
        {
            "model": "auto",
            "messages": [_USER],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {"type": "object"}},
            },
        },
        {},
    ),
    ("auto, 41-message conversation", {"model": "auto", "messages": _LONG}, {}),
    ("auto, same + a new turn each call", _next_turn, {}),
    ("pinned glm-4.7", {"model": "glm-4.7", "messages": [_USER]}, {}),
    ("alias `long`", {"model": "long", "messages": [_USER]}, {}),
    (
        "auto + X-GLM-* headers",
        {"model": "auto", "messages": [_USER]},
        {
            "x-glm-capabilities": "function_calling",
            "x-glm-min-context": "100k",
            "x-glm-prefer": "latency",
            "x-glm-params": ">=30B",
        },
    ),
]


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def main() -> int:
    packaged = ROOT / "gateway" / "config"  # before the move into the package: ROOT / "config"
    conf = packaged if packaged.is_dir() else ROOT / "config"
    config = load_config(conf, demo_simulator_url="http://127.0.0.1:1")
    cat, routing = config.catalogue, config.gateway.routing
    # The hot path plans without wording refusals where the planner can (explain=False).
    kw: dict[str, Any] = {}
    if "explain" in inspect.signature(plan).parameters:
        kw["explain"] = False
    # A planner that takes a prebuilt catalogue index gets it once, as its caller would.
    index_cls = getattr(sys.modules[plan.__module__], "PlannerIndex", None)
    if index_cls is not None and "index" in inspect.signature(plan).parameters:
        kw["index"] = index_cls(cat)
    rows = []
    everything: list[float] = []
    planner_only: list[float] = []
    # The collector as the serving process sets it (trees before it had none).
    quiet = getattr(importlib.import_module("gateway.app"), "quiet_gc", None)
    for name, body, headers in CASES:
        raw = orjson.dumps(body(-1) if callable(body) else body)
        size = len(raw)
        samples: list[float] = []
        alone: list[float] = []
        parse: list[float] = []
        cands = 0
        gc.collect()
        if quiet is not None:
            quiet()
        for i in range(ITER + WARM):
            if callable(body):
                raw = orjson.dumps(body(i))
            t0 = time.perf_counter_ns()
            parsed = orjson.loads(raw)
            t1 = time.perf_counter_ns()
            needs = resolve_needs(parsed, headers, config)
            t2 = time.perf_counter_ns()
            p = plan(needs, cat, routing, open_circuits={}, latency={}, **kw)
            t3 = time.perf_counter_ns()
            if i >= WARM:
                parse.append((t1 - t0) / 1000)
                samples.append((t3 - t1) / 1000)
                alone.append((t3 - t2) / 1000)
            cands = len(p.candidates)
        everything += samples
        planner_only += alone
        rows.append(
            (name, size, cands, _pct(parse, 50), _pct(samples, 50), _pct(samples, 99),
             max(samples), _pct(alone, 50), _pct(alone, 99))
        )  # fmt: skip
    print("## Planner micro-benchmark (bench/planner_micro.py)")
    print()
    print(
        f"`resolve_needs` + `plan` over the {len(cat.variants)}-variant catalogue "
        f"({len(cat.targets)} deployments, all usable), {ITER} timed calls per body after {WARM} "
        f"warm-up, one process, Python {sys.version.split()[0]}; the machine was shared. "
        "Target: the planner alone ≤ 50 µs p99 (`plan`; `resolve_needs` reads the body and "
        "counts its tokens, which grows with the prompt)."
    )
    print()
    print(
        "| body | bytes | candidates | orjson parse p50 µs | needs+plan p50 µs | p99 µs | max µs "
        "| plan alone p50 µs | **plan alone p99 µs** |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, size, cands, pp, p50, p99, mx, a50, a99 in rows:
        print(f"| {name} | {size} | {cands} | {pp:.1f} | {p50:.1f} | {p99:.1f} | {mx:.0f} "
              f"| {a50:.1f} | **{a99:.1f}** |")  # fmt: skip
    print(
        f"| **all bodies** | | | | **{statistics.median(everything):.1f}** | "
        f"**{_pct(everything, 99):.1f}** | {max(everything):.0f} | "
        f"{statistics.median(planner_only):.1f} | **{_pct(planner_only, 99):.1f}** |"
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
