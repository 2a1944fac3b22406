"""Sequential requests with per-request timing: time to first body byte and to the last byte.

wrk measures whole responses; a stream's TTFB needs a client that looks at the first chunk.
One keep-alive connection, requests one after another (concurrency 1), bounded by count and
time. Input: one JSON argument {url, headers, body, n, max_s}. Output: JSON, times in µs.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

import aiohttp


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    body = spec["body"].encode()
    headers = {"Content-Type": "application/json", **spec["headers"]}
    first: list[float] = []
    total: list[float] = []
    errors = 0
    end = time.monotonic() + float(spec["max_s"])
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as session:
        for i in range(int(spec["n"]) + 5):  # 5 warm-up requests, not counted
            if time.monotonic() > end:
                break
            t0 = time.perf_counter()
            t_first = None
            async with session.post(spec["url"], data=body, headers=headers) as resp:
                async for chunk in resp.content.iter_any():
                    if t_first is None and chunk:
                        t_first = time.perf_counter()
                ok = resp.status == 200
            t1 = time.perf_counter()
            if i < 5:
                continue
            if not ok or t_first is None:
                errors += 1
                continue
            first.append((t_first - t0) * 1e6)
            total.append((t1 - t0) * 1e6)
    return {
        "n": len(first),
        "errors": errors,
        "ttfb_p50": _pct(first, 50),
        "ttfb_p99": _pct(first, 99),
        "ttfb_mean": statistics.fmean(first) if first else float("nan"),
        "total_p50": _pct(total, 50),
        "total_p99": _pct(total, 99),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    factory = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        print(json.dumps(runner.run(run(spec))))


if __name__ == "__main__":
    main()
