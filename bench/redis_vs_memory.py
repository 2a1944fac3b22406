"""Throughput of the gateway with the Redis state backend next to the in-memory one.

    .venv/bin/python bench/redis_vs_memory.py [--requests 1500] [--rounds 5] [--concurrency 16]
                                              [--cluster]

Self-contained: starts the provider simulator, a private ``redis-server`` on a free port, and
two gateways (``state.backend`` memory / redis, otherwise identical) as child processes on
loopback. ``--cluster`` adds a three-master Redis Cluster (no replicas) and a third gateway
on it (``GLM_GATEWAY_REDIS_CLUSTER_NODES``). Each gateway gets a virtual key with RPM, TPM and
a budget, so every request goes through the whole admission path (key check, limits, budget
reservation, settlement). The load
is a fixed number of non-streaming requests at a fixed concurrency, run A B A B ... for
``--rounds`` rounds; the table shows medians over rounds. Logs go to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
MASTER = "sk-bench-master"
BODY = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited; see {OUT}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not come up; see {OUT}")


def spawn(name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = (OUT / f"{name}.log").open("wb")
    full = {k: v for k, v in os.environ.items() if not k.startswith("GLM_GATEWAY_REDIS_")}
    full.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.Popen(args, cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)


def wait_redis(port: int) -> None:
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    sys.exit("redis-server did not answer")


def redis_info(port: int, command: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(command + b"\r\n")
        return s.recv(65536).decode(errors="replace")


def start_cluster(tmp: Path, procs: list[subprocess.Popen[bytes]], binary: str) -> str:
    """Three masters on free ports, joined with ``redis-cli --cluster create``: the seeds."""
    ports = [free_port() for _ in range(3)]
    for port in ports:
        d = tmp / f"cluster-{port}"
        d.mkdir()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(d), "--cluster-enabled", "yes", "--cluster-port", str(free_port())]
        procs.append(spawn(f"bench-redis-cluster-{port}", [binary, *args]))
        wait_redis(port)
    cli = shutil.which("redis-cli") or sys.exit("redis-cli is not on PATH")
    nodes = [f"127.0.0.1:{p}" for p in ports]
    subprocess.run(
        [cli, "--cluster", "create", *nodes, "--cluster-yes"],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=60,
    )
    end = time.monotonic() + 30
    while not all("cluster_state:ok" in redis_info(p, b"CLUSTER INFO") for p in ports):
        if time.monotonic() > end:
            sys.exit("the Redis Cluster did not come up")
        time.sleep(0.1)
    return ",".join(nodes)


def start_all(
    tmp: Path, cluster: bool
) -> tuple[list[subprocess.Popen[bytes]], dict[str, str], str]:
    procs: list[subprocess.Popen[bytes]] = []
    redis_port, sim_port = free_port(), free_port()
    binary = shutil.which("redis-server") or sys.exit("redis-server is not on PATH")
    redis_args = ["--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
    redis_args += ["--appendonly", "no", "--dir", str(tmp)]
    procs.append(spawn("bench-redis", [binary, *redis_args]))
    wait_redis(redis_port)
    gw = [sys.executable, "-m", "gateway.cli"]
    procs.append(spawn("bench-sim", [*gw, "simulate", "--port", str(sim_port)]))
    sim = f"http://127.0.0.1:{sim_port}"
    wait_http(sim + "/_sim/healthz", procs[-1], "simulator")
    urls: dict[str, str] = {}
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    seeds = start_cluster(tmp, procs, binary) if cluster else ""
    for backend in ("memory", "redis", "redis-cluster") if cluster else ("memory", "redis"):
        port = free_port()
        env = {"GLM_GATEWAY_MASTER_KEY": MASTER, "GLM_GATEWAY_LOG_LEVEL": "warning"}
        if backend == "redis":
            env["GLM_GATEWAY_REDIS_URL"] = redis_url
        elif backend == "redis-cluster":
            env["GLM_GATEWAY_REDIS_CLUSTER_NODES"] = seeds
        args = [*gw, "serve", "--port", str(port), "--simulator", sim, "--log-level", "warning"]
        procs.append(spawn(f"bench-gw-{backend}", args, env))
        urls[backend] = f"http://127.0.0.1:{port}"
        wait_http(urls[backend] + "/healthz", procs[-1], f"gateway ({backend})")
    return procs, urls, redis_url


async def make_key(http: aiohttp.ClientSession, url: str) -> str:
    spec = {"name": "bench", "rpm": 10**7, "tpm": 10**9, "budget_usd": 10**6}
    auth = {"Authorization": f"Bearer {MASTER}"}
    async with http.post(url + "/admin/keys", json=spec, headers=auth) as r:
        r.raise_for_status()
        return str((await r.json())["key"])


async def run_load(
    http: aiohttp.ClientSession, url: str, key: str, n: int, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    queue = iter(range(n))
    headers = {"Authorization": f"Bearer {key}"}

    async def worker() -> None:
        nonlocal errors
        for _ in queue:
            t0 = time.perf_counter()
            async with http.post(url + "/v1/chat/completions", json=BODY, headers=headers) as r:
                await r.read()
                errors += r.status != 200
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": n / took,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "errors": float(errors),
    }


async def round_trips(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Hot-path state calls by op (``before``/``after``) and those not answered in time."""
    async with http.get(url + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for name, suffix in (
        ("glm_gateway_state_op_duration_seconds_count{", ""),
        ("glm_gateway_state_errors_total{", " late"),
    ):
        for line in text.splitlines():
            if line.startswith(name):
                labels = line[line.index("{") + 1 : line.index("}")]
                op = dict(p.split("=", 1) for p in labels.split(","))["op"].strip('"')
                if op in ("before", "after"):
                    out[op + suffix] = out.get(op + suffix, 0.0) + float(line.split()[-1])
    return out


async def bench(args: argparse.Namespace, urls: dict[str, str]) -> list[dict[str, Any]]:
    conn = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=conn) as http:
        keys = {b: await make_key(http, u) for b, u in urls.items()}
        for b, u in urls.items():  # warm up connections, caches, scripts
            await run_load(http, u, keys[b], 200, args.concurrency)
        before = {b: await round_trips(http, u) for b, u in urls.items()}
        runs: dict[str, list[dict[str, float]]] = {b: [] for b in urls}
        for _ in range(args.rounds):
            for b, u in urls.items():
                runs[b].append(await run_load(http, u, keys[b], args.requests, args.concurrency))
        after = {b: await round_trips(http, u) for b, u in urls.items()}
    total = args.rounds * args.requests
    rows = []
    for b, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")}
        errors = sum(r["errors"] for r in rs)
        a, z = before[b], after[b]
        per_request = {op: (z.get(op, 0) - a.get(op, 0)) / total for op in z}
        trips = " + ".join(f"{v:.2f} {op}" for op, v in sorted(per_request.items()) if v)
        rows.append({"backend": b, **med, "errors": errors, "trips": trips or "-"})
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.rounds} rounds x {args.requests} non-streaming requests, concurrency "
        f"{args.concurrency}, alternating {'/'.join(r['backend'] for r in rows)}; medians "
        "over rounds.",
        "",
        "| state backend | req/s | p50 ms | p99 ms | errors | Redis round trips per request |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['errors']:.0f} | {r['trips']} |"
        )
    lines.append("")
    for r in rows[1:]:
        lines.append(f"{r['backend']} / memory throughput: {r['rps'] / rows[0]['rps']:.2f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--cluster", action="store_true", help="also a three-master Redis Cluster")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="glmgw-bench-") as tmp:
        procs, urls, _ = start_all(Path(tmp), args.cluster)
        try:
            rows = asyncio.run(bench(args, urls))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(table(rows, args))


if __name__ == "__main__":
    main()
