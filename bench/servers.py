"""Server choice: the floor, ``minimal`` and the gateway on uvicorn and on granian, side by side.

    bash bench/setup.sh --no-peers && .venv/bin/python bench/servers.py
    .venv/bin/python bench/servers.py --rounds 3 --seconds 3 --conc 16 --shapes json,sse

nginx upstream (a static completion, and a 50-chunk stream) and wrk (1 thread) on core 0; each
server under test alone on core 1, one at a time under load, every target once per round in
the same order (A B A B ...). uvicorn runs as today (uvloop, httptools); granian 2.x as an
ASGI server (``--interface asgi``, 1 worker, uvloop, HTTP/1), with the same app objects
(``floor.floor_app``, ``floor.minimal_app``, ``granian_gateway.gateway``). Output: a table
on stdout and in bench/results/servers.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BENCH,
    OUT,
    PROXY_CORE,
    ROOT,
    VENV_PY,
    Proc,
    Target,
    free_port,
    http_ok,
    machine,
    median,
    paired,
    wrk,
)
from peers import start_nginx
from report import Results
from run import MASTER_KEY, chat_body, dumps, gateway_target, start_gateway

GRANIAN = [
    str(VENV_PY.parent / "granian"), "--interface", "asgi", "--factory", "--loop", "uvloop",
    "--http", "1", "--no-ws", "--workers", "1", "--log-level", "warning", "--host", "127.0.0.1",
]  # fmt: skip


def granian(name: str, target: str, env: dict[str, str]) -> Proc:
    port = free_port()
    pythonpath = f"{BENCH}:{ROOT}"
    proc = Proc(
        f"{name}-{port}",
        [*GRANIAN, "--port", str(port), target],
        core=PROXY_CORE,
        env={"PYTHONPATH": pythonpath, **env},
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def uvicorn_floor(name: str, up: str, *flags: str) -> Proc:
    port = free_port()
    proc = Proc(
        f"{name}-{port}",
        [str(VENV_PY), str(BENCH / "floor.py"), str(port), *flags],
        core=PROXY_CORE,
        env={"FLOOR_UPSTREAM": up + "/v1/chat/completions"},
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--conc", type=lambda s: [int(x) for x in s.split(",")], default=[16])
    p.add_argument("--shapes", type=lambda s: s.split(","), default=["json", "sse"])
    args = p.parse_args()
    res = Results()
    names: dict[str, list[str]] = {}
    with contextlib.ExitStack() as stack:
        nginx, ports = start_nginx()
        stack.callback(nginx.stop)
        for shape in args.shapes:
            stream = shape == "sse"
            up = f"http://127.0.0.1:{ports[shape]}"
            body = dumps(chat_body("glm-4.7-flash", stream))
            hdrs = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
            floor_env = {"FLOOR_UPSTREAM": up + "/v1/chat/completions"}
            targets: list[Target] = []
            with contextlib.ExitStack() as procs:
                apps: list[tuple[str, str, tuple[str, ...]]] = [("floor", "floor:floor_app", ())]
                if not stream:
                    apps.append(("minimal", "floor:minimal_app", ("--minimal",)))
                for app, factory, flags in apps:
                    for server in ("uvicorn", "granian"):
                        if server == "uvicorn":
                            proc = uvicorn_floor(f"{app}-uv", up, *flags)
                        else:
                            proc = granian(f"{app}-gr", factory, floor_env)
                        procs.callback(proc.stop)
                        url = proc.url
                        proc.wait_ready(lambda u=url: http_ok(u + "/"))  # type: ignore[misc]
                        name = f"{app} ({server})"
                        targets.append(Target(name, url + "/v1/chat/completions", body, hdrs, proc))
                gw_uv = start_gateway(up, stream=stream)
                procs.callback(gw_uv.stop)
                targets.append(gateway_target(gw_uv, "auto", stream, "gateway (uvicorn)"))
                gw_env = {"GATEWAY_UPSTREAM": up, "GLM_GATEWAY_MASTER_KEY": MASTER_KEY}
                gw_gr = granian("gateway-gr", "granian_gateway:gateway", gw_env)
                procs.callback(gw_gr.stop)
                auth = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
                probe = dumps(chat_body("auto", stream))
                gw_url = gw_gr.url + "/v1/chat/completions"
                gw_gr.wait_ready(lambda u=gw_url, b=probe, h=auth: http_ok(u, b, h))  # type: ignore[misc]
                targets.append(gateway_target(gw_gr, "auto", stream, "gateway (granian)"))
                names[shape] = [t.name for t in targets]
                for c in args.conc:
                    for t in targets:
                        wrk(t, c, 1)
                    for r in range(args.rounds):
                        for t in targets:
                            res.add(shape, c, t.name, r, wrk(t, c, args.seconds))
    text = table(res, args, names)
    print(text)
    (ROOT / "bench" / "results" / "servers.md").write_text(text)
    (OUT / "servers.txt").write_text(text)
    return 0


def table(res: Results, args: argparse.Namespace, names: dict[str, list[str]]) -> str:
    out = [
        "## Server choice: uvicorn vs granian (same apps, nginx upstream)",
        "",
        f"{args.rounds} alternated rounds x {args.seconds:g} s per target; wrk and nginx on core "
        f"0, the server under test alone on core 1. {machine()}; the machine was shared.",
        "",
        "| shape | conns | app | uvicorn req/s | granian req/s | granian ÷ uvicorn (paired) "
        "| CPU µs/req uvicorn | CPU µs/req granian | errors |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for shape, shape_names in names.items():
        apps = sorted(
            {n.split(" ")[0] for n in shape_names}, key=["floor", "minimal", "gateway"].index
        )
        for c in args.conc:
            for app in apps:
                uv, gr = f"{app} (uvicorn)", f"{app} (granian)"
                a, b = res.col(shape, c, uv, "rps"), res.col(shape, c, gr, "rps")
                ca, cb = (
                    res.col(shape, c, uv, "cpu_us_per_req"),
                    res.col(shape, c, gr, "cpu_us_per_req"),
                )
                errs = res.error_rate(shape, c, uv) + res.error_rate(shape, c, gr)
                out.append(
                    f"| {shape} | {c} | {app} | {median(a):.0f} | {median(b):.0f} | "
                    f"{paired(a, b, lambda y, x: y / x):.2f}× | {median(ca):.0f} | "
                    f"{median(cb):.0f} | {errs:.1%} |"
                )
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
