"""Sizing: memory and CPU of one replica holding many long streams open at once.

LLM traffic is long-lived: a replica's capacity is the number of streams it holds open and the
chunks per second it relays, not only requests per second. This starts the simulator and one
gateway (in-memory state, the shipped config), then for each level K opens K concurrent
streaming chat requests whose upstream sends one chunk every ``--gap-ms`` without end (the
simulator's ``trickle_ms``), holds them for ``--seconds``, and reads the gateway's RSS and CPU
(user + system, /proc) over that window. Then it closes them all and reads RSS again.

    .venv/bin/python bench/sizing.py                      # K = 100, 400, 1000; 100 ms gaps
    .venv/bin/python bench/sizing.py --levels 200,800 --gap-ms 50

Load generator and simulator on core 0, the gateway alone on core 1. Output: a table on stdout
and in bench/results/sizing.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import OUT, ROOT, VENV_PY, Proc, cpu_seconds, free_port, http_ok, machine, rss_mib
from run import MASTER_KEY, start_gateway


def _body(gap_ms: float) -> bytes:
    rule = [{"trickle_ms": gap_ms}]
    text = "Hold this stream open. <<sim:" + orjson.dumps(rule).decode() + ">>"
    return orjson.dumps(
        {"model": "auto", "stream": True, "messages": [{"role": "user", "content": text}]}
    )


async def _hold(url: str, body: bytes, k: int, seconds: float, gw_pid: int) -> dict[str, Any]:
    """Open ``k`` streams, wait for each one's first chunk, measure for ``seconds``, close."""
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    chunks = 0
    started = asyncio.Event()
    opened = 0
    failed = 0
    stop = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal chunks, opened, failed
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    failed += 1
                    return
                first = True
                async for _ in resp.content.iter_any():
                    chunks += 1
                    if first:
                        first = False
                        opened += 1
                        if opened + failed >= k:
                            started.set()
                    if stop.is_set():
                        return
        except aiohttp.ClientError:
            failed += 1
        finally:
            if opened + failed >= k:
                started.set()

    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=seconds + 120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(k)]
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.sleep(1.0)  # let the open settle before measuring
        c0, n0, t0 = cpu_seconds(gw_pid), chunks, time.monotonic()
        await asyncio.sleep(seconds)
        c1, n1, t1 = cpu_seconds(gw_pid), chunks, time.monotonic()
        rss_open = rss_mib(gw_pid)
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = t1 - t0
    rate = (n1 - n0) / elapsed
    cpu = (c1 - c0) / elapsed
    return {
        "k": k,
        "opened": opened,
        "failed": failed,
        "rss_open_mib": rss_open,
        "cpu_frac": cpu,
        "chunks_per_s": rate,
        "cpu_us_per_chunk": cpu / rate * 1e6 if rate else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="100,400,1000", help="concurrent streams, comma-separated")
    ap.add_argument("--gap-ms", type=float, default=100.0, help="upstream gap between chunks")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per level")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x]

    sim_port = free_port()
    sim_argv = [str(VENV_PY), "-m", "gateway.cli", "simulate", "--port", str(sim_port)]
    sim = Proc("sizing-simulator", sim_argv, core="0", env={"PYTHONPATH": str(ROOT)})
    sim_url = f"http://127.0.0.1:{sim_port}"
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        stack.callback(sim.stop)
        sim.wait_ready(lambda: http_ok(sim_url + "/_sim/healthz"))
        gw = start_gateway(sim_url)
        stack.callback(gw.stop)
        idle = rss_mib(gw.pid)
        for k in levels:
            row = asyncio.run(
                _hold(gw.url + "/v1/chat/completions", _body(args.gap_ms), k, args.seconds, gw.pid)
            )
            time.sleep(1.0)
            row["rss_after_mib"] = rss_mib(gw.pid)
            rows.append(row)
            print(row, flush=True)
    lines = [
        "# Sizing: one replica holding K streams open",
        "",
        f"{machine()}; upstream gap {args.gap_ms:g} ms per chunk; {args.seconds:g} s window per "
        f"level; idle RSS {idle:.1f} MiB. `.venv/bin/python bench/sizing.py`",
        "",
        "| open streams | opened / failed | RSS open (MiB) | MiB per 100 streams | chunks/s "
        "| gateway CPU (cores) | CPU µs/chunk | RSS after close (MiB) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        per100 = (r["rss_open_mib"] - idle) / r["k"] * 100
        lines.append(
            f"| {r['k']} | {r['opened']} / {r['failed']} | {r['rss_open_mib']:.1f} | {per100:.2f} "
            f"| {r['chunks_per_s']:.0f} | {r['cpu_frac']:.2f} | {r['cpu_us_per_chunk']:.1f} "
            f"| {r['rss_after_mib']:.1f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    out = ROOT / "bench" / "results" / "sizing.md"
    out.write_text(table)
    OUT.mkdir(parents=True, exist_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
