"""Markdown tables from alternated runs: medians, paired differences, ratios."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness import median, paired

Key = tuple[str, int, str]  # shape, concurrency, target


class Results:
    """Per-round wrk results by (shape, concurrency, target)."""

    def __init__(self) -> None:
        self.runs: dict[Key, list[dict[str, Any]]] = defaultdict(list)

    def add(self, shape: str, conc: int, target: str, rnd: int, got: dict[str, Any]) -> None:
        self.runs[(shape, conc, target)].append({"round": rnd, **got})

    def col(self, shape: str, conc: int, target: str, field: str) -> list[float]:
        return [float(r[field]) for r in self.runs.get((shape, conc, target), []) if r.get(field)]

    def has(self, shape: str, conc: int, target: str) -> bool:
        return (shape, conc, target) in self.runs

    def error_rate(self, shape: str, conc: int, target: str) -> float:
        runs = self.runs.get((shape, conc, target), [])
        total = sum(r["requests"] for r in runs)
        return sum(r["errors"] for r in runs) / total if total else 0.0

    def dump(self, path: Path, meta: dict[str, Any]) -> None:
        rows = [
            {"shape": s, "conc": c, "target": t, "runs": v} for (s, c, t), v in self.runs.items()
        ]
        path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1, default=str))


def ms(us: float) -> str:
    return "-" if math.isnan(us) else f"{us / 1000:.2f}"


def num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0f}"


def signed_ms(us: float) -> str:
    return "-" if math.isnan(us) else f"{us / 1000:+.2f}"


def ratio(x: float) -> str:
    return "-" if math.isnan(x) or math.isinf(x) else f"{x:.2f}×"


def _sub(b: float, a: float) -> float:
    return b - a


def _div(b: float, a: float) -> float:
    return b / a if a else float("nan")


def _header(title: str, args: argparse.Namespace, mach: str) -> list[str]:
    return [
        f"## {title}",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} on {mach}. The machine was SHARED with "
        "other engineers' test suites while this ran: absolute figures are noisy; the paired "
        "differences and ratios (each round's runs back to back) are the figures to quote.",
        f"Code measured: {args.src_desc}. Pinning: load generator (wrk 4.1, 1 thread) and "
        f"upstream on core 0, proxy under test on core 1 (taskset). {args.rounds} alternated "
        f"rounds × {args.seconds:g} s per target and cell, after a 1 s warm-up each; medians "
        "over rounds.",
        "",
    ]


def _errors(res: Results, shape: str, conc: int, names: list[str]) -> str:
    rates = [res.error_rate(shape, conc, n) for n in names]
    worst = max(rates) if rates else 0.0
    return "0" if worst == 0 else f"{worst:.1%}"


def quick_table(res: Results, args: argparse.Namespace, meta: dict[str, Any], mach: str) -> str:
    out = _header("Gateway vs direct-to-simulator (bench/run.py --quick)", args, mach)
    out += [
        "Same simulator, same body, same load; `direct` posts to the simulator's provider path "
        "the gateway's plan picks first (with the upstream model id). Added = gateway − direct, "
        "median of per-round pairs; ratio = gateway req/s ÷ direct req/s, median of pairs. "
        "Gateway config: the packaged gateway/config/ (auth on, capability routing, Prometheus "
        "metrics, in-memory breaker state, JSON access log at info to a file).",
        "",
        "Routes: " + ", ".join(f"`{m}` → {r}" for m, r in meta["routes"].items()) + ".",
        "",
        "| model | stream | conc | direct p50 ms | gateway p50 ms | **added p50 ms** | "
        "direct p99 ms | gateway p99 ms | **added p99 ms** | direct req/s | gateway req/s | "
        "**throughput ratio** | gateway CPU µs/req | added mean ms (wrk) | gateway-reported "
        "overhead mean ms | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    pairs = [(m, f"gateway:{m}") for m in args.models]
    cands = {k[2] for k in res.runs if k[2].startswith("candidate:")}
    pairs += [(m, f"candidate:{m}") for m in args.models if f"candidate:{m}" in cands]
    for model, g in pairs:
        d = f"direct:{model}"
        label = model if g.startswith("gateway:") else f"{model} (candidate)"
        for shape in args.shapes:
            for c in args.conc:
                if not res.has(shape, c, g):
                    continue
                dp50, gp50 = res.col(shape, c, d, "p50"), res.col(shape, c, g, "p50")
                dp99, gp99 = res.col(shape, c, d, "p99"), res.col(shape, c, g, "p99")
                drps, grps = res.col(shape, c, d, "rps"), res.col(shape, c, g, "rps")
                cpu = res.col(shape, c, g, "cpu_us_per_req")
                out.append(
                    f"| {label} | {'yes' if shape == 'sse' else 'no'} | {c} | "
                    f"{ms(median(dp50))} | {ms(median(gp50))} | "
                    f"**{signed_ms(paired(dp50, gp50, _sub))}** | "
                    f"{ms(median(dp99))} | {ms(median(gp99))} | "
                    f"**{signed_ms(paired(dp99, gp99, _sub))}** | "
                    f"{median(drps):.0f} | {median(grps):.0f} | "
                    f"**{ratio(paired(drps, grps, _div))}** | {median(cpu):.0f} | "
                    f"{_honesty(res, shape, c, d, g)} | {_errors(res, shape, c, [d, g])} |"
                )
    out += [
        "",
        f"Gateway process: cold start to first 200 on /v1/chat/completions "
        f"{meta['cold_start_s']:.2f} s; RSS idle {meta['idle_rss_mib']:.1f} MiB, after the runs "
        f"{meta['rss_after_mib']:.1f} MiB.",
        "",
        "Read with care: the simulator is Python (aiohttp) sharing core 0 with wrk, so `direct` "
        "is the simulator's own limit on that core; when the gateway's req/s is far below it, "
        "the gateway (core 1) is the bottleneck and the ratio is its cost. `--full` replaces "
        "the simulator with nginx and adds the floor reference.",
        "",
    ]
    return "\n".join(out)


GW = "gateway:"


def _honesty(res: Results, shape: str, c: int, direct: str, gw: str) -> str:
    """Measured added mean latency next to the gateway's own overhead histogram mean."""
    added = paired(res.col(shape, c, direct, "mean"), res.col(shape, c, gw, "mean"), _sub)
    reported = res.col(shape, c, gw, "reported_overhead_us")
    return f"{signed_ms(added)} | {ms(median(reported)) if reported else 'not exported'}"


def _beyond_floor(res: Results, shape: str, c: int, gw: str) -> float:
    """What the gateway adds to the mean beyond the floor (median of per-round pairs): the
    floor's own added time is the server, client and extra hop every proxy pays and that no
    handler sees, so this is what the self-reported overhead should come close to."""
    return paired(res.col(shape, c, "floor", "mean"), res.col(shape, c, gw, "mean"), _sub)


def full_tables(res: Results, args: argparse.Namespace, meta: dict[str, Any], mach: str) -> str:
    title = "Gateway vs floor vs peers, nginx static upstream (bench/run.py --full)"
    out = _header(title, args, mach)
    out += [
        "Upstream: nginx 1 worker on core 0 returning a static chat.completion (366 B) or a "
        "static SSE stream of 50 chunks + [DONE] (9.4 KB). `floor` = bench/floor.py (raw ASGI on "
        "uvicorn+uvloop+httptools, one aiohttp session, no parsing). `minimal` = bench/floor.py "
        "--minimal: the floor plus only the work no gateway with these features can skip (auth "
        "lookup, body parse and check, a dict route, re-serialise both ways, three counters, two "
        "histogram bumps, one JSON log line); non-streaming only. Gateway: packaged gateway/config "
        "with auth on, capability routing, metrics, in-memory state, JSON access log to a file. "
        "Routes: " + ", ".join(f"`{m}` → {r}" for m, r in meta.get("routes", {}).items()) + ".",
        "Peers: " + (", ".join(f"{k}: {v}" for k, v in meta["peers"].items()) or "none") + ".",
        "",
    ]
    order = ["direct", "floor", "minimal", GW, "candidate:", "portkey", "litellm"]
    names = sorted(
        {t for (_, _, t) in res.runs},
        key=lambda n: order.index(next(p for p in order if n.startswith(p))),
    )
    gw0 = f"{GW}{args.models[0]}"
    for shape in args.shapes:
        out += [
            f"### {'Streaming (50 chunks)' if shape == 'sse' else 'Non-streaming'}",
            "",
            "| conc | target | p50 ms | p99 ms | added p50 ms | req/s | vs floor req/s | "
            f"{gw0} ÷ this req/s | p99 ÷ floor p99 | CPU µs/req | added mean ms | "
            "self-reported overhead mean ms | mean beyond the floor's ms | errors |",
            "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for c in args.conc:
            d50 = res.col(shape, c, "direct (nginx)", "p50")
            f_rps, f99 = res.col(shape, c, "floor", "rps"), res.col(shape, c, "floor", "p99")
            g_rps = res.col(shape, c, gw0, "rps")
            for n in names:
                if not res.has(shape, c, n):
                    continue
                p50, p99 = res.col(shape, c, n, "p50"), res.col(shape, c, n, "p99")
                rps, cpu = res.col(shape, c, n, "rps"), res.col(shape, c, n, "cpu_us_per_req")
                ours = n.startswith((GW, "candidate:"))
                honest = "- | - | -"
                if ours:
                    beyond = signed_ms(_beyond_floor(res, shape, c, n))
                    honest = f"{_honesty(res, shape, c, 'direct (nginx)', n)} | {beyond}"
                out.append(
                    f"| {c} | {n} | {ms(median(p50))} | {ms(median(p99))} | "
                    f"{signed_ms(paired(d50, p50, _sub)) if n != 'direct (nginx)' else '-'} | "
                    f"{median(rps):.0f} | {ratio(paired(f_rps, rps, _div))} | "
                    f"{ratio(paired(rps, g_rps, _div))} | {ratio(paired(f99, p99, _div))} | "
                    f"{num(median(cpu))} | "
                    f"{honest} | "
                    f"{_errors(res, shape, c, [n])} |"
                )
        out.append("")
    out += _ttfb_table(meta)
    out += _targets(res, args, meta)
    return "\n".join(out)


def _ttfb_table(meta: dict[str, Any]) -> list[str]:
    tt = meta.get("ttfb") or {}
    if not tt:
        return []
    direct = [r["ttfb_p50"] for r in tt.get("direct (nginx)", [])]
    out = [
        "### Streaming time to first byte, concurrency 1 (bench/load.py, aiohttp client)",
        "",
        "| target | TTFB p50 ms | TTFB p99 ms | added TTFB p50 ms | whole stream p50 ms | errors |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name, rounds in tt.items():
        p50 = [r["ttfb_p50"] for r in rounds]
        out.append(
            f"| {name} | {ms(median(p50))} | {ms(median([r['ttfb_p99'] for r in rounds]))} | "
            f"{signed_ms(paired(direct, p50, _sub)) if name != 'direct (nginx)' else '-'} | "
            f"{ms(median([r['total_p50'] for r in rounds]))} | "
            f"{sum(r['errors'] for r in rounds)} |"
        )
    return [*out, ""]


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def _targets(res: Results, args: argparse.Namespace, meta: dict[str, Any]) -> list[str]:
    gw = f"{GW}{args.models[0]}"
    rows: list[tuple[str, str, bool | None]] = []

    def rps_ratio(c: int, other: str) -> float:
        return paired(res.col("json", c, other, "rps"), res.col("json", c, gw, "rps"), _div)

    if 16 in args.conc:
        for peer, want in (("litellm", 40.0), ("portkey", 5.0)):
            if res.has("json", 16, peer):
                r = rps_ratio(16, peer)
                rows.append((f"@16 req/s ≥ {want:g}× {peer}", ratio(r), r >= want))
        r = rps_ratio(16, "floor")
        rows.append(("@16 req/s within 15% of floor", ratio(r) + " of floor", r >= 0.85))
        if res.has("json", 16, "minimal"):
            m = paired(res.col("json", 16, "floor", "rps"), res.col("json", 16, "minimal", "rps"),
                       _div)  # fmt: skip
            rows.append(("(reference) `minimal` @16: what is left of the floor after the "
                         "irreducible work alone", ratio(m) + " of floor", None))  # fmt: skip
        cpu = median(res.col("json", 16, gw, "cpu_us_per_req"))
        rows.append(("CPU per non-streaming request ≤ 450 µs (@16)", f"{cpu:.0f} µs", cpu <= 450))
        s_cpu = median(res.col("sse", 16, gw, "cpu_us_per_req"))
        if not math.isnan(s_cpu):
            per = (s_cpu - cpu) / 51
            rows.append(("CPU per relayed chunk ≤ 15 µs (@16, (sse − json)/51)", f"{per:.1f} µs",
                         per <= 15))  # fmt: skip
    if 1 in args.conc:
        added = paired(res.col("json", 1, "direct (nginx)", "p50"), res.col("json", 1, gw, "p50"),
                       _sub)  # fmt: skip
        rows.append(("added p50 ≤ 0.8 ms @1", f"{added / 1000:.2f} ms", added <= 800))
    if 64 in args.conc:
        r = paired(res.col("json", 64, "floor", "p99"), res.col("json", 64, gw, "p99"), _div)
        rows.append(("@64 p99 ≤ 1.3× floor's", ratio(r), r <= 1.3))
    if 1 in args.conc:
        reported = res.col("json", 1, gw, "reported_overhead_us")
        if reported:
            rep, beyond = median(reported), _beyond_floor(res, "json", 1, gw)
            close = abs(rep - beyond) <= max(100.0, 0.25 * abs(beyond))
            rows.append(("overhead histogram honest @1 (its mean vs mean beyond the floor's)",
                         f"{rep / 1000:.2f} vs {beyond / 1000:.2f} ms", close))  # fmt: skip
    tt = meta.get("ttfb") or {}
    if gw in tt:
        d = [x["ttfb_p50"] for x in tt["direct (nginx)"]]
        added = paired(d, [x["ttfb_p50"] for x in tt[gw]], _sub)
        rows.append(("streaming added TTFB ≤ 1 ms", f"{added / 1000:.2f} ms", added <= 1000))
    gp = meta["procs"].get("gateway-json") or meta["procs"].get("gateway-sse") or {}
    if gp:
        rss = gp["idle_rss_mib"]
        rows.append(("idle RSS ≤ 70 MiB", f"{rss:.1f} MiB", rss <= 70))
        rows.append(("cold start to first 200 ≤ 1.5 s", f"{gp['cold_start_s']:.2f} s",
                     gp["cold_start_s"] <= 1.5))  # fmt: skip
    out = [
        f"### Issue 6 targets ({gw}, this run)",
        "",
        "| target | measured | |",
        "|---|--:|---|",
    ]
    out += [f"| {what} | {val} | {_check(ok)} |" for what, val, ok in rows]
    out += ["", "Processes (cold start = spawn to first 200; RSS in MiB):", ""]
    for name, p in meta["procs"].items():
        bits = [f"{k} {v:.2f}" for k, v in p.items() if isinstance(v, float)]
        out.append(f"- {name}: " + ", ".join(bits))
    return [*out, ""]


SCRIPT_CALLS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")


def _num(values: list[Any]) -> str:
    got = [v for v in values if v is not None]
    return f"{median(got):.0f}" if got else "-"


def redis_table(res: Results, meta: dict[str, Any], rounds: int) -> str:
    mem, rds = "gateway (memory)", "gateway (redis)"
    m, r = res.col("json", 16, mem, "rps"), res.col("json", 16, rds, "rps")
    mc, rc = res.col("json", 16, mem, "cpu_us_per_req"), res.col("json", 16, rds, "cpu_us_per_req")
    # Requests the redis gateway served while counted: the timed runs plus the 1 s warm-up.
    reqs = sum(x["requests"] for x in res.runs.get(("json", 16, rds), []))
    reqs += meta.get("warmup_requests", 0)
    cmds: dict[str, int] = meta["commands"]
    scripts = sum(v for k, v in cmds.items() if k in SCRIPT_CALLS)
    top = sorted(cmds.items(), key=lambda kv: -kv[1])[:8]
    per = ", ".join(f"{k} {v / reqs:.2f}" for k, v in top) if reqs else "-"
    server_us = meta.get("redis_cpu_s", float("nan")) / reqs * 1e6 if reqs else float("nan")
    return "\n".join(
        [
            "## Redis state vs in-memory (non-streaming, c=16)",
            "",
            f"{rounds} alternated rounds, nginx upstream, same config; the machine was shared.",
            "",
            "| | memory req/s | redis req/s | redis ÷ memory | CPU µs/req memory | CPU µs/req "
            "redis | script calls/request | redis-server CPU µs/req |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
            f"| median | {median(m):.0f} | {median(r):.0f} | {ratio(paired(m, r, _div))} | "
            f"{_num(mc)} | {_num(rc)} | {scripts / reqs if reqs else float('nan'):.2f} | "
            f"{server_us:.1f} |",
            "",
            "redis-server CPU µs/req: the Redis server's own CPU time over the timed runs (its "
            "Lua scripts, commands and sockets) per request the Redis gateway served: what each "
            "request costs the one Redis all replicas share.",
            "",
            f"Redis commands per request (INFO commandstats, commands run inside Lua scripts "
            f"included, so these are not round trips): {per}. Round trips per request ≈ script "
            "calls (EVALSHA/EVAL/FCALL) plus any command the gateway sends outside a script.",
            "",
        ]
    )


def soak_table(
    rows: list[tuple[int, float]], target: int, where: str = "", shape: str = "json"
) -> str:
    base = rows[1][1] if len(rows) > 1 else rows[0][1]
    peak = max(r for _, r in rows[1:]) if len(rows) > 1 else base
    out = [
        f"## RSS over {rows[-1][0]} requests (target {target}; "
        f"{'50-chunk streams' if shape == 'sse' else 'non-streaming'}, c=16)",
        "",
        f"After warm-up {base:.1f} MiB, peak {peak:.1f} MiB ({(peak / base - 1):+.1%}), "
        f"last {rows[-1][1]:.1f} MiB. {where}",
        "",
        "| requests | RSS MiB |",
        "|--:|--:|",
    ]
    step = max(1, len(rows) // 20)
    out += [f"| {n} | {r:.1f} |" for n, r in rows[::step]]
    return "\n".join([*out, ""])


def profile_table(raw: Path, shape: str, got: dict[str, Any], args: argparse.Namespace) -> str:
    """Self and inclusive sample shares by function from py-spy's collapsed stacks."""
    if not raw.exists():
        return f"## Profile ({shape}): py-spy wrote nothing (see bench/out/py-spy-{shape}.log)\n"
    total = 0
    own: dict[str, int] = defaultdict(int)
    incl: dict[str, int] = defaultdict(int)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit() or "``" in stack:
            continue  # ("``": py-spy --nonblocking read a torn frame, a docstring for a name)
        count = int(n)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return f"## Profile ({shape}): no samples (py-spy needs ptrace; see bench/out)\n"

    def top(d: dict[str, int], n: int) -> list[str]:
        rows = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [f"| {100 * v / total:.1f}% | `{k}` |" for k, v in rows]

    return "\n".join(
        [
            f"## Profile: gateway, {'streaming' if shape == 'sse' else 'non-streaming'}, c=16 "
            f"(py-spy --nonblocking, 250 Hz, {args.seconds:g} s; {got['rps']:.0f} req/s, "
            f"{got['cpu_us_per_req']:.0f} µs CPU/req while sampled)",
            "",
            f"{total} samples (idle event-loop waits included in `select`/`run_forever`).",
            "",
            "Self time (top 25):",
            "",
            "| share | function (file:line) |",
            "|--:|---|",
            *top(own, 25),
            "",
            "Inclusive, gateway code only (top 30):",
            "",
            "| share | function |",
            "|--:|---|",
            *top({k: v for k, v in incl.items() if "gateway/" in k}, 30),
            "",
        ]
    )


def _frame(f: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"; keep the path from the package on.
    name, _, where = f.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/gateway/", "/lib/python3.11/"):
        if marker in where:
            where = ("gateway/" if marker == "/gateway/" else "") + where.split(marker, 1)[1]
            break
    path = where.rsplit(":", 1)[0]
    return f"{name} ({path})"
