"""``serve --workers N``: one worker against two, side by side, Redis state, nginx upstream.

    .venv/bin/python bench/workers.py                    # 3 alternated rounds x 4 s, c=16 and 64
    .venv/bin/python bench/workers.py --rounds 5 --seconds 5 --conc 32

wrk (1 thread), nginx and redis-server on core 0 as in every bench here. ``1 worker`` runs on
core 1 alone; ``2 workers`` run on cores 0 and 1, so the second worker shares core 0 with the
load generator, the upstream and Redis: on this 2-core machine that is the only second core
there is. Output: bench/results/workers.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    OUT,
    ROOT,
    VENV_PY,
    Proc,
    Target,
    config_dir,
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
                    res.add("json", c, t.name, r, wrk(t, c, args.seconds))
    lines = [
        "## serve --workers: 1 worker vs 2 (Redis state, non-streaming)",
        "",
        f"{args.rounds} alternated rounds x {args.seconds:g} s; wrk, nginx, redis-server on "
        "core 0; 1 worker on core 1; 2 workers on cores 0-1 (sharing core 0 with the load). "
        f"{machine()}; the machine was shared.",
        "",
        "| conns | 1 worker req/s | 2 workers req/s | 2 ÷ 1 (paired) | CPU µs/req 1 "
        "| CPU µs/req 2 |",
        "|--:|--:|--:|--:|--:|--:|",
    ]
    for c in args.conc:
        a, b = res.col("json", c, "1 worker", "rps"), res.col("json", c, "2 workers", "rps")
        ca = res.col("json", c, "1 worker", "cpu_us_per_req")
        cb = res.col("json", c, "2 workers", "cpu_us_per_req")
        ratio = paired(a, b, lambda y, x: y / x)
        lines.append(
            f"| {c} | {median(a):.0f} | {median(b):.0f} | {ratio:.2f}× | "
            f"{median(ca):.0f} | {median(cb):.0f} |"
        )
    text = "\n".join([*lines, ""])
    print(text)
    (ROOT / "bench" / "results" / "workers.md").write_text(text)
    (OUT / "workers.txt").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
