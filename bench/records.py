"""Throughput with PostgreSQL records configured next to without (issue 18: within 5%).

    .venv/bin/python bench/records.py [--requests 1500] [--rounds 5] [--concurrency 16]
        [--database postgresql://postgres@127.0.0.1:5432/test]

Self-contained but for PostgreSQL: starts the provider simulator, a private ``redis-server``
and two gateways on the Redis state backend (their own Redis database each), one of them with
``GLM_GATEWAY_DATABASE_URL`` set to a scratch database made on ``--database``'s server (dropped
at the end). Each gets a virtual key with limits and a budget, so every request runs the whole
admission path, and with records every answer queues a ledger row. Load as in
``redis_vs_memory.py`` (its helpers): A B A B ... for ``--rounds``; medians over rounds. The
ledger's row count is checked against the answers at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from redis_vs_memory import (
    MASTER,
    OUT,
    free_port,
    make_key,
    run_load,
    spawn,
    wait_http,
    wait_redis,
)


def start_all(tmp: Path, db: str) -> tuple[list[subprocess.Popen[bytes]], dict[str, str]]:
    procs: list[subprocess.Popen[bytes]] = []
    redis_port, sim_port = free_port(), free_port()
    binary = shutil.which("redis-server") or sys.exit("redis-server is not on PATH")
    redis_args = ["--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
    procs.append(spawn("records-redis", [binary, *redis_args, "--dir", str(tmp)]))
    wait_redis(redis_port)
    gw = [sys.executable, "-m", "gateway.cli"]
    procs.append(spawn("records-sim", [*gw, "simulate", "--port", str(sim_port)]))
    sim = f"http://127.0.0.1:{sim_port}"
    wait_http(sim + "/_sim/healthz", procs[-1], "simulator")
    urls: dict[str, str] = {}
    for n, name in enumerate(("without", "postgres")):
        port = free_port()
        env = {
            "GLM_GATEWAY_MASTER_KEY": MASTER,
            "GLM_GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/{n}",
        }
        if name == "postgres":
            env["GLM_GATEWAY_DATABASE_URL"] = db
        args = [*gw, "serve", "--port", str(port), "--simulator", sim, "--log-level", "warning"]
        procs.append(spawn(f"records-gw-{name}", args, env))
        urls[name] = f"http://127.0.0.1:{port}"
        wait_http(urls[name] + "/healthz", procs[-1], f"gateway ({name})")
    return procs, urls


async def bench(args: argparse.Namespace, urls: dict[str, str], db: str) -> list[dict[str, Any]]:
    conn = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=conn) as http:
        keys = {b: await make_key(http, u) for b, u in urls.items()}
        for b, u in urls.items():  # warm up
            await run_load(http, u, keys[b], 200, args.concurrency)
        runs: dict[str, list[dict[str, float]]] = {b: [] for b in urls}
        for _ in range(args.rounds):
            for b, u in urls.items():
                runs[b].append(await run_load(http, u, keys[b], args.requests, args.concurrency))
    answered = 200 + args.rounds * args.requests
    end = time.monotonic() + 60
    with psycopg.connect(db) as c:
        while True:
            row = c.execute("SELECT count(*) FROM glm_gateway_spend").fetchone()
            rows = int(row[0]) if row else 0
            if rows >= answered or time.monotonic() > end:
                break
            await asyncio.sleep(0.2)
    out = []
    for b, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")}
        ledger = f"{rows} of {answered}" if b == "postgres" else "-"
        out.append({"gateway": b, **med, "errors": sum(r["errors"] for r in rs), "ledger": ledger})
    return out


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.rounds} rounds x {args.requests} non-streaming requests, concurrency "
        f"{args.concurrency}, Redis state, alternating without/with PostgreSQL; medians.",
        "",
        "| records | req/s | p50 ms | p99 ms | errors | ledger rows |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['gateway']} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['errors']:.0f} | {r['ledger']} |"
        )
    ratio = rows[1]["rps"] / rows[0]["rps"]
    lines += ["", f"postgres / without throughput: {ratio:.3f}"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"glmgw_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    db = args.database.rsplit("/", 1)[0] + "/" + name
    try:
        with tempfile.TemporaryDirectory(prefix="glmgw-bench-") as tmp:
            procs, urls = start_all(Path(tmp), db)
            try:
                rows = asyncio.run(bench(args, urls, db))
            finally:
                for proc in reversed(procs):
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    finally:
        with psycopg.connect(args.database, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(table(rows, args))


if __name__ == "__main__":
    main()
