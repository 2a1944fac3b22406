"""``serve --workers N``: one worker against two, side by side, Redis state, nginx upstream.

    .venv/bin/python bench/workers.py                    # 3 alternated rounds x 4 s, c=16 and 64
    .venv/bin/python bench/workers.py --rounds 5 --seconds 5 --conc 32

wrk (1 thread), nginx and redis-server on core 0 as in every bench here. ``1 worker`` runs on
core 1 alone; ``2 workers`` run on cores 0 and 1, so the second worker shares core 0 with the
load generator, the upstream and Redis: on this 2-core machine that is the only second core
there is. Output: bench/results/workers.md.

Because of that, the raw ratio cannot reach 2× here, and the table says what the machine
allows: for every run it also reads the gateway's CPU (every worker's, from /proc), the load
side's (wrk through ``getrusage``, nginx and redis-server from /proc) and the whole machine's
busy time (/proc/stat, other users included), and reports requests per gateway CPU-second.
If two workers serve as many requests per CPU-second as one, N workers on N cores of their own
scale with N; the cores the gateway got are the limit, not the gateway.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    OUT,
    ROOT,
    VENV_PY,
    Proc,
    Target,
    config_dir,
    cpu_seconds,
    free_port,
    http_ok,
    machine,
    median,
    paired,
    wrk,
)
from peers import start_nginx, start_redis
from report import Results
from run import MASTER_KEY, chat_body, dumps, gateway_target


def start(upstream: str, redis_url: str, workers: int, cores: str) -> Proc:
    port = free_port()
    argv = [str(VENV_PY), "-m", "gateway.cli", "serve", "--config", str(config_dir(ROOT))]
    argv += ["--port", str(port), "--simulator", upstream, "--workers", str(workers)]
    env = {"GLM_GATEWAY_MASTER_KEY": MASTER_KEY, "GLM_GATEWAY_REDIS_URL": redis_url}
    proc = Proc(f"gateway-w{workers}-{port}", argv, core=cores, env=env)
    proc.url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    body = dumps(chat_body("auto", False))
    proc.wait_ready(lambda: http_ok(proc.url + "/v1/chat/completions", body, auth))
    return proc


_CLK = os.sysconf("SC_CLK_TCK")
_FIELDS = ("rps", "cpu_us_per_req", "per_cpu_s", "gw_cores", "load_cores", "machine_cores")


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every core, every user), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _CLK


def wrk_cpu_s() -> float:
    """CPU seconds of this script's finished children (the wrk runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measured(t: Target, conns: int, seconds: float, load: list[Proc]) -> dict[str, Any]:
    """One wrk run plus where the CPU went: the gateway, the load side, the machine."""
    side0 = sum(cpu_seconds(p.pid) for p in load) + wrk_cpu_s()
    busy0 = machine_busy_s()
    out = wrk(t, conns, seconds)
    out["machine_busy_s"] = machine_busy_s() - busy0
    out["load_cpu_s"] = sum(cpu_seconds(p.pid) for p in load) + wrk_cpu_s() - side0
    wall = out["duration_us"] / 1e6
    out["gw_cores"] = out["cpu_s"] / wall
    out["load_cores"] = out["load_cpu_s"] / wall
    out["machine_cores"] = out["machine_busy_s"] / wall
    out["per_cpu_s"] = out["requests"] / out["cpu_s"] if out["cpu_s"] else 0.0
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--conc", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    args = p.parse_args()
    res = Results()
    with contextlib.ExitStack() as stack:
        nginx, ports = start_nginx()
        stack.callback(nginx.stop)
        red, redis_url = start_redis()
        stack.callback(red.stop)
        up = f"http://127.0.0.1:{ports['json']}"
        one = start(up, redis_url, 1, "1")
        stack.callback(one.stop)
        two = start(up, redis_url, 2, "0,1")
        stack.callback(two.stop)
        targets: list[Target] = [
            gateway_target(one, "auto", False, "1 worker"),
            gateway_target(two, "auto", False, "2 workers"),
        ]
        for c in args.conc:
            for t in targets:
                wrk(t, c, 1)
            for r in range(args.rounds):
                for t in targets:
                    res.add("json", c, t.name, r, measured(t, c, args.seconds, [nginx, red]))
    lines = [
        "## serve --workers: 1 worker vs 2 (Redis state, non-streaming)",
        "",
        f"{args.rounds} alternated rounds x {args.seconds:g} s; wrk, nginx, redis-server on "
        "core 0; 1 worker on core 1; 2 workers on cores 0-1 (sharing core 0 with the load). "
        f"{machine()}; the machine was shared.",
        "",
        "Per CPU-second = requests ÷ the gateway's CPU seconds (every worker, from /proc). "
        "Cores = CPU seconds ÷ wall seconds: the gateway's, the load side's (wrk, nginx, "
        "redis-server) and the whole machine's busy time (other users included; 2.00 = full).",
        "",
        "| conns | workers | req/s | ratio (paired) | CPU µs/req | req per gateway CPU-s "
        "| per CPU-s ratio (paired) | gateway cores | load-side cores | machine busy cores |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in args.conc:
        a, b = res.col("json", c, "1 worker", "rps"), res.col("json", c, "2 workers", "rps")
        ratio = paired(a, b, lambda y, x: y / x)
        pa = res.col("json", c, "1 worker", "per_cpu_s")
        pb = res.col("json", c, "2 workers", "per_cpu_s")
        eff = paired(pa, pb, lambda y, x: y / x)
        rows = (("1 worker", 1, "1.00×", "1.00×"), ("2 workers", 2, f"{ratio:.2f}×", f"{eff:.2f}×"))
        for name, n, rr, e in rows:
            m = {k: median(res.col("json", c, name, k)) for k in _FIELDS}
            lines.append(
                f"| {c} | {n} | {m['rps']:.0f} | {rr} | {m['cpu_us_per_req']:.0f} | "
                f"{m['per_cpu_s']:.0f} | {e} | {m['gw_cores']:.2f} | "
                f"{m['load_cores']:.2f} | {m['machine_cores']:.2f} |"
            )
    text = "\n".join([*lines, ""])
    print(text)
    (ROOT / "bench" / "results" / "workers.md").write_text(text)
    (OUT / "workers.txt").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
