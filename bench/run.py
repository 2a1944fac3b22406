"""glm-gateway benchmarks: one command, side by side, alternated, medians and ratios.

    .venv/bin/python bench/run.py            # = --quick
    .venv/bin/python bench/run.py --quick    # gateway vs direct-to-simulator, c=1/16/64,
                                             # streaming and not (issue 2's table)
    bash bench/setup.sh && .venv/bin/python bench/run.py --full
                                             # nginx static upstream; direct, floor
                                             # and minimal (bench/floor.py), gateway, Portkey,
                                             # LiteLLM proxy (issue 6's table)
    .venv/bin/python bench/run.py --planner  # planner micro-benchmark only

Load generator and upstream run on core 0, the proxy under test on core 1 (taskset). For each
cell (shape x concurrency) every target runs once per round, in the same order (A B A B ...);
figures are medians over rounds, and "added" / ratios are medians of the per-round pairs.
Tables go to stdout and bench/results/<scenario>.md; raw runs to bench/out/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BENCH,
    OUT,
    PROXY_CORE,
    ROOT,
    VENV_PY,
    Proc,
    Target,
    config_dir,
    cpu_seconds,
    free_port,
    http_json,
    http_ok,
    http_text,
    machine,
    metric_totals,
    rss_mib,
    source_tree,
    ttfb,
    wrk,
)
from peers import start_litellm, start_nginx, start_portkey
from report import Results, full_tables, quick_table

MASTER_KEY = "bench-master-key"
SRC = ROOT
"""The gateway source under test (``--src``); set once in main()."""
AB: Path | None = None
"""A second gateway source (``--ab``) run side by side as ``candidate:<model>``."""
MESSAGES = [
    {"role": "system", "content": "You are a concise assistant. Answer in one short paragraph."},
    {"role": "user", "content": "Summarise why a gateway should add as little latency as it can."},
]


def chat_body(model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 256}
    if stream:
        body["stream"] = True
    return body


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def start_gateway(
    upstream_url: str,
    env: dict[str, str] | None = None,
    *,
    stream: bool = False,
    src: Path | None = None,
) -> Proc:
    """The gateway on the proxy core, every provider pointed at ``upstream_url``.

    ``stream``: the readiness probe asks for a stream (nginx's SSE port answers only those).
    """
    src = src or SRC
    port = free_port()
    argv = [str(VENV_PY), "-m", "gateway.cli", "serve", "--config", str(config_dir(src))]
    argv += ["--port", str(port), "--simulator", upstream_url]
    proc = Proc(
        f"gateway-{port}",
        argv,
        core=PROXY_CORE,
        env={"GLM_GATEWAY_MASTER_KEY": MASTER_KEY, "PYTHONPATH": str(src), **(env or {})},
        cwd=src,
    )
    proc.url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    # Cold start: spawn to the first 200 on the hot path (imports, config, first upstream call).
    proc.wait_ready(
        lambda: http_ok(proc.url + "/v1/chat/completions", dumps(chat_body("auto", stream)), auth)
    )
    return proc


def gateway_target(gw: Proc, model: str, stream: bool, name: str) -> Target:
    return Target(
        name,
        gw.url + "/v1/chat/completions",
        dumps(chat_body(model, stream)),
        {"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"},
        proc=gw,
    )


def routed(gw: Proc, model: str) -> tuple[str, str]:
    """(provider, upstream model) the gateway's plan puts first for ``model``."""
    out = http_json(
        gw.url + "/v1/route",
        chat_body(model, False),
        {"Authorization": f"Bearer {MASTER_KEY}"},
    )
    first = out["candidates"][0]
    return str(first["provider"]), str(first["upstream_model"])


@contextlib.contextmanager
def running(*procs: Proc | None) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            if p is not None:
                p.stop()


def run_cells(
    res: Results,
    shape: str,
    targets: list[Target],
    concs: list[int],
    rounds: int,
    seconds: float,
    *,
    warmup: bool = True,
) -> None:
    """Every target once per round at each concurrency, alternated; results into ``res``."""
    for c in concs:
        for t in targets if warmup else ():  # warm-up: pools filled, caches hot
            wrk(t, c, 1)
        for r in range(rounds):
            for t in targets:
                before = _overhead(t)
                got = wrk(t, c, seconds)
                after = _overhead(t)
                if before and after and after[1] > before[1]:
                    # What the gateway's own overhead histogram says about these requests.
                    got["reported_overhead_us"] = (
                        (after[0] - before[0]) / (after[1] - before[1]) * 1e6
                    )
                res.add(shape, c, t.name, r, got)
                print(
                    f"  {shape:4} c={c:<3} round {r + 1}/{rounds} {t.name:24} "
                    f"{got['rps']:8.0f} req/s p50 {got['p50'] / 1000:7.2f} ms "
                    f"p99 {got['p99'] / 1000:7.2f} ms err {got['errors']}",
                    file=sys.stderr,
                    flush=True,
                )


OVERHEAD_METRIC = "glm_gateway_overhead_seconds"


def _overhead(t: Target) -> tuple[float, float] | None:
    if t.proc is None or not t.proc.url or not t.name.startswith(("gateway", "candidate")):
        return None
    return metric_totals(t.proc.url, OVERHEAD_METRIC)


# --- --quick: gateway vs direct-to-simulator ---------------------------------------------------


def quick(args: argparse.Namespace) -> str:
    sim_port = free_port()
    sim = Proc(
        "simulator",
        [
            str(VENV_PY),
            "-m",
            "gateway.cli",
            "simulate",
            "--config",
            str(config_dir(SRC)),
            "--port",
            str(sim_port),
        ],
        core="0",
        env={"PYTHONPATH": str(SRC)},
        cwd=SRC,
    )
    sim_url = f"http://127.0.0.1:{sim_port}"
    with contextlib.ExitStack() as stack:
        stack.callback(sim.stop)
        sim.wait_ready(lambda: http_ok(sim_url + "/_sim/healthz"))
        gw = start_gateway(sim_url)
        stack.callback(gw.stop)
        cand = start_gateway(sim_url, src=AB) if AB else None
        if cand is not None:
            stack.callback(cand.stop)
        idle = rss_mib(gw.pid)
        res = Results()
        meta: dict[str, Any] = {"cold_start_s": gw.ready_s, "idle_rss_mib": idle, "routes": {}}
        for shape, stream in (("json", False), ("sse", True)):
            targets = []
            for model in args.models:
                provider, upstream = routed(gw, model)
                meta["routes"][model] = f"{provider}/{upstream}"
                direct = chat_body(upstream, stream)
                targets.append(
                    Target(
                        f"direct:{model}",
                        f"{sim_url}/{provider}/v1/chat/completions",
                        dumps(direct),
                        {"Content-Type": "application/json", "Authorization": "Bearer sim"},
                    )
                )
                targets.append(gateway_target(gw, model, stream, f"gateway:{model}"))
                if cand is not None:
                    targets.append(gateway_target(cand, model, stream, f"candidate:{model}"))
            run_cells(res, shape, targets, args.conc, args.rounds, args.seconds)
        meta["rss_after_mib"] = rss_mib(gw.pid)
        meta["metrics"] = _scrape(gw)
    res.dump(OUT / "quick.json", meta)
    return quick_table(res, args, meta, machine())


def _scrape(gw: Proc) -> str:
    try:
        return http_text(gw.url + "/metrics")
    except OSError:
        return ""


# --- --full: nginx upstream, floor, gateway, peers ---------------------------------------------


def full(args: argparse.Namespace) -> str:
    nginx, ports = start_nginx()
    res = Results()
    meta: dict[str, Any] = {"peers": {}, "ttfb": {}, "procs": {}}
    with running(nginx):
        for shape in args.shapes:
            stream = shape == "sse"
            up = f"http://127.0.0.1:{ports[shape]}"
            body = dumps(chat_body("glm-4.7-flash", stream))
            json_h = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
            targets = [Target("direct (nginx)", up + "/v1/chat/completions", body, json_h)]
            procs: list[Proc] = []
            try:
                floor, target = _start_floor("floor", up, body, json_h)
                procs.append(floor)
                targets.append(target)
                if not stream:  # the floor plus the irreducible work (bench/floor.py Minimal)
                    minimal, target = _start_floor("minimal", up, body, json_h, "--minimal")
                    procs.append(minimal)
                    targets.append(target)
                gw = start_gateway(up, stream=stream)
                procs.append(gw)
                labels = {f"floor-{shape}": floor, f"gateway-{shape}": gw}
                meta["procs"][f"gateway-{shape}"] = {
                    "cold_start_s": gw.ready_s,
                    "idle_rss_mib": rss_mib(gw.pid),
                }
                cand = start_gateway(up, stream=stream, src=AB) if AB else None
                if cand is not None:
                    procs.append(cand)
                for model in args.models:
                    targets.append(gateway_target(gw, model, stream, f"gateway:{model}"))
                    if cand is not None:
                        targets.append(gateway_target(cand, model, stream, f"candidate:{model}"))
                    meta.setdefault("routes", {})[model] = "/".join(routed(gw, model))
                for name, starter in (("portkey", start_portkey), ("litellm", start_litellm)):
                    if name not in args.peers:
                        continue
                    try:
                        t = starter(up, body)
                    except Exception as exc:  # a peer that cannot run is reported, not fatal
                        meta["peers"][name] = f"not run: {exc}"
                        print(f"  {name}: {exc}", file=sys.stderr)
                        continue
                    assert t.proc is not None
                    procs.append(t.proc)
                    labels[f"{name}-{shape}"] = t.proc
                    meta["peers"][name] = t.note
                    meta["procs"][f"{name}-{shape}"] = {
                        "cold_start_s": t.proc.ready_s,
                        "idle_rss_mib": rss_mib(t.proc.pid),
                    }
                    targets.append(t)
                run_cells(res, shape, targets, args.conc, args.rounds, args.seconds)
                if stream:
                    meta["ttfb"] = _ttfb_rounds(targets, args)
                for label, p in labels.items():
                    meta["procs"].setdefault(label, {})["rss_after_mib"] = rss_mib(p.pid)
            finally:
                for p in reversed(procs):
                    p.stop()
    res.dump(OUT / "full.json", meta)
    return full_tables(res, args, meta, machine())


def _start_floor(
    name: str, up: str, body: bytes, headers: dict[str, str], *flags: str
) -> tuple[Proc, Target]:
    """bench/floor.py on the proxy core, forwarding to ``up`` (``flags``: ``--minimal``)."""
    port = free_port()
    proc = Proc(
        f"{name}-{port}",
        [str(VENV_PY), str(BENCH / "floor.py"), str(port), *flags],
        core=PROXY_CORE,
        env={"FLOOR_UPSTREAM": up + "/v1/chat/completions"},
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_ready(lambda: http_ok(url + "/"))
    return proc, Target(name, url + "/v1/chat/completions", body, headers, proc)


def _ttfb_rounds(targets: list[Target], args: argparse.Namespace) -> dict[str, list[Any]]:
    """Sequential streams through each target, alternated, ``args.rounds`` times."""
    out: dict[str, list[Any]] = {t.name: [] for t in targets}
    for _ in range(args.rounds):
        for t in targets:
            out[t.name].append(ttfb(t, args.ttfb_n, 30))
    return out


# --- --redis: the same gateway, state in memory vs in Redis ------------------------------------


def redis_check(args: argparse.Namespace) -> str:
    if not (SRC / "gateway" / "state" / "redis.py").exists():
        return (
            "## Redis state\n\nnot run: gateway/state/redis.py does not exist yet in this tree "
            "(the harness is ready: `--redis` starts redis-server on core 0, runs the gateway "
            "with GLM_GATEWAY_REDIS_URL, counts commands per request from INFO commandstats).\n"
        )
    from peers import redis_commands, start_redis

    res = Results()
    meta: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        nginx, ports = start_nginx()
        stack.callback(nginx.stop)
        red, redis_url = start_redis()
        stack.callback(red.stop)
        up = f"http://127.0.0.1:{ports['json']}"
        mem = start_gateway(up)
        stack.callback(mem.stop)
        rds = start_gateway(up, {"GLM_GATEWAY_REDIS_URL": redis_url})
        stack.callback(rds.stop)
        targets = [
            gateway_target(mem, "auto", False, "gateway (memory)"),
            gateway_target(rds, "auto", False, "gateway (redis)"),
        ]
        for t in targets:
            wrk(t, 16, 1)  # warm-up outside the count
        before = redis_commands(redis_url)
        cpu = cpu_seconds(red.proc.pid)
        run_cells(res, "json", targets, [16], args.rounds, args.seconds, warmup=False)
        meta["redis_cpu_s"] = cpu_seconds(red.proc.pid) - cpu  # only the Redis rows use it
        after = redis_commands(redis_url)
        meta["commands"] = {k: v - before.get(k, 0) for k, v in after.items()}
        meta["commands"].pop("info", None)  # our own INFO calls
    from report import redis_table

    return redis_table(res, meta, args.rounds)


# --- --soak: RSS over many requests ------------------------------------------------------------


def soak(args: argparse.Namespace) -> str:
    """RSS of one gateway over ``--soak`` requests per shape (``--shapes``; json: non-streaming,
    sse: 50-chunk streams), with its idle RSS before any load."""
    nginx, ports = start_nginx()
    out = []
    with running(nginx):
        for shape in args.shapes:
            stream = shape == "sse"
            gw = start_gateway(f"http://127.0.0.1:{ports[shape]}", stream=stream)
            with running(gw):
                time.sleep(1.0)
                idle = rss_mib(gw.pid)
                t = gateway_target(gw, "auto", stream, "gateway")
                wrk(t, 16, 2)
                rows, done, start = [(0, rss_mib(gw.pid))], 0, time.monotonic()
                while done < args.soak and time.monotonic() - start < args.soak_max_s:
                    done += wrk(t, 16, 10)["requests"]
                    rows.append((done, rss_mib(gw.pid)))
            from report import soak_table

            where = (
                f"Idle RSS (started, one readiness request, 1 s) {idle:.1f} MiB. Code measured: "
                f"{args.src_desc}; gateway on core 1, wrk (10 s runs) and nginx on core 0; "
                f"{machine()}; the machine was shared."
            )
            out.append(soak_table(rows, args.soak, where, shape))
    return "\n".join(out)


def profile(args: argparse.Namespace) -> str:
    """py-spy on the gateway under wrk load (nginx upstream): where the CPU goes, by function."""
    from report import profile_table

    spy = ROOT / ".venv" / "bin" / "py-spy"
    if not spy.exists():
        return "py-spy not installed: bash bench/setup.sh --no-peers\n"
    nginx, ports = start_nginx()
    out = []
    with running(nginx):
        for shape in args.shapes:
            gw = start_gateway(f"http://127.0.0.1:{ports[shape]}", stream=shape == "sse")
            with running(gw):
                t = gateway_target(gw, args.models[0], shape == "sse", "gateway")
                wrk(t, 16, 2)
                raw = OUT / f"profile-{shape}.txt"
                raw.unlink(missing_ok=True)  # never report a stale profile
                rec = subprocess.Popen(
                    [
                        str(spy),
                        "record",
                        "--pid",
                        str(gw.pid),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--duration",
                        f"{args.seconds:g}",
                        "--output",
                        str(raw),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(OUT / f"py-spy-{shape}.log").open("wb"),
                )
                got = wrk(t, 16, args.seconds)
                rec.wait(timeout=args.seconds + 60)
                out.append(profile_table(raw, shape, got, args))
    return "\n".join(out)


def planner(args: argparse.Namespace) -> str:
    """The planner micro-benchmark for SRC; with --ab, SRC and the candidate alternated twice."""
    runs = [("", SRC)] if AB is None else [("baseline", SRC), ("candidate", AB)] * 2
    out = []
    for label, src in runs:
        res = subprocess.run(
            [str(VENV_PY), str(BENCH / "planner_micro.py")],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=src,
            env={**os.environ, "PYTHONPATH": str(src)},
        )
        text = res.stdout if res.returncode == 0 else f"failed: {res.stderr[-1500:]}\n"
        if label:
            text = text.replace(
                "(bench/planner_micro.py)", f"(bench/planner_micro.py): {label}, {src}"
            )
        out.append(text)
    return "\n".join(out)


def _describe_src(rev: str | None) -> str:
    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip()

    if rev and Path(rev).is_dir():
        return f"directory {rev}"
    if rev:
        return f"git {git('rev-parse', '--short', rev)} (snapshot of {rev})"
    dirty = " + uncommitted changes" if git("status", "--porcelain", "gateway") else ""
    return f"work tree at {git('rev-parse', '--short', 'HEAD')}{dirty}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="gateway vs direct simulator (default)")
    g.add_argument("--full", action="store_true", help="nginx: floor, minimal, gateway, peers")
    g.add_argument("--planner", action="store_true", help="planner micro-benchmark only")
    g.add_argument("--redis", action="store_true", help="gateway: memory vs Redis state")
    g.add_argument("--profile", action="store_true", help="py-spy the gateway under c=16 load")
    g.add_argument("--soak", type=int, metavar="N", help="RSS over N requests at c=16")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds per cell")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run")
    p.add_argument("--conc", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    p.add_argument("--shapes", type=lambda s: s.split(","), default=["json", "sse"])
    p.add_argument(
        "--models",
        type=lambda s: s.split(","),
        default=["auto", "glm-4.5-air"],
        help="client `model` values sent through the gateway (auto -> zai, zhipu dialect: chunks "
        "re-encoded; glm-4.5-air -> vllm: chunks relayed as bytes)",
    )
    p.add_argument("--peers", type=lambda s: s.split(","), default=["portkey", "litellm"])
    p.add_argument("--ttfb-n", type=int, default=200, help="streams per target per TTFB round")
    p.add_argument("--soak-max-s", type=float, default=1800)
    p.add_argument(
        "--src",
        metavar="REV",
        help="measure a snapshot of git REV (e.g. HEAD) instead of the live work tree",
    )
    p.add_argument(
        "--ab",
        metavar="REV_OR_DIR",
        help="also run a gateway from this source (git rev or directory) as `candidate:<model>`, "
        "alternated with the one under test: A/B a proposed patch",
    )
    p.add_argument("--no-planner", action="store_true", help="--full without the planner table")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    global SRC, AB
    SRC = source_tree(args.src)
    AB = source_tree(args.ab) if args.ab else None
    args.src_desc = _describe_src(args.src) + (f"; candidate: {args.ab}" if args.ab else "")
    (BENCH / "results").mkdir(exist_ok=True)
    if args.full:
        name, text = "full", full(args)
        if not args.no_planner:
            text += "\n" + planner(args)
        if not args.ab:
            text += "\n" + redis_check(args)
    elif args.planner:
        name, text = "planner", planner(args)
    elif args.redis:
        name, text = "redis", redis_check(args)
    elif args.profile:
        name, text = "profile", profile(args)
    elif args.soak:
        name, text = "soak", soak(args)
    else:
        name, text = "quick", quick(args)
    if args.ab:
        name += "-ab"  # an A/B of a candidate source is not the scenario's reference table
    (BENCH / "results" / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
