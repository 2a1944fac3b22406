"""The ``glm-gateway`` command: serve, init, check-config, route, catalog, simulate, top, keys,
spend, migrate."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from gateway import __version__
from gateway.catalogue.catalogue import Config
from gateway.catalogue.loader import default_config_dir, load_config
from gateway.catalogue.schema import DEFAULT_SURFACE
from gateway.cli.config_cmds import add_config_parsers, cmd_check_config
from gateway.cli.keys import add_keys_parser
from gateway.cli.records_cmds import add_records_parsers
from gateway.cli.workers import WORKERS_HELP, serve_workers, workers_refused
from gateway.errors import ConfigError, GatewayError
from gateway.settings import Settings
from gateway.state.redis_target import target_problems

DEMO_HELP = (
    "serve every variant from the built-in provider simulator: in-memory state, no provider "
    "keys, client auth off (any bearer key works), no Redis unless a GLM_GATEWAY_REDIS_* var is set"
)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def resolve_config(
    config_dir: str | None,
    *,
    demo_simulator_url: str | None = None,
    demo_auth_off: bool = False,
) -> Config:
    """Load the config directory with process settings applied (Redis URL, demo).

    With ``demo_simulator_url`` every provider is served by that simulator (no keys needed);
    ``demo_auth_off`` also turns client auth off and keeps state in memory (``--demo``), unless
    a Redis mode is set (GLM_GATEWAY_REDIS_URL, _SENTINELS or _CLUSTER_NODES).
    """
    settings = Settings.from_env()
    directory = config_dir or settings.config_dir or str(default_config_dir())
    config = load_config(directory, demo_simulator_url=demo_simulator_url)
    gw = config.gateway
    if demo_auth_off:
        gw = gw.model_copy(update={"auth": gw.auth.model_copy(update={"enabled": False})})
        gw = gw.model_copy(update={"state": gw.state.model_copy(update={"backend": "memory"})})
    redis = settings.redis_state()
    if redis is not None:
        state = gw.state.model_copy(update=redis)
        problems = target_problems(state)
        if problems:
            raise ConfigError("environment: " + "; ".join(problems))
        gw = gw.model_copy(update={"state": state})
    if settings.database_url:
        database = gw.database.model_copy(update={"url": settings.database_url})
        gw = gw.model_copy(update={"database": database})
    return dataclasses.replace(config, gateway=gw)


def _print_warnings(config: Config) -> None:
    for line in config.warnings:
        print(f"glm-gateway: {line}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import build_redactor, create_app
    from gateway.edge.server import serve
    from gateway.observability.logs import configure_logging

    sim_url = args.simulator.rstrip("/") if args.simulator else None
    sim_port = 0
    if args.demo and sim_url is None:
        sim_port = _free_port("127.0.0.1")
        sim_url = f"http://127.0.0.1:{sim_port}"

    def load() -> Config:  # at start, and again for each config reload
        return resolve_config(args.config, demo_simulator_url=sim_url, demo_auth_off=args.demo)

    config = load()
    host = args.host or config.gateway.server.host
    port = args.port if args.port is not None else config.gateway.server.port
    refused = workers_refused(args, config)
    if refused:
        print(f"glm-gateway: {refused}", file=sys.stderr)
        return 2
    taken = _cannot_listen(host, port)
    if taken:  # one clear line, before any banner says it is running
        print(f"glm-gateway: cannot listen on {host}:{port}: {taken}", file=sys.stderr)
        return 2
    level = args.log_level or Settings.from_env().log_level or config.gateway.logging.level
    redactor = build_redactor(config)
    configure_logging(level, config.gateway.logging, redactor)
    _print_warnings(config)
    _warn_if_inexact_tokens()
    if args.workers > 1:
        return serve_workers(args.workers, host, port, config, load, redactor)
    hooks: dict[str, Any] = {}
    if args.demo and sim_port:
        hooks = _demo_hooks(config, sim_port)
    app = create_app(config, demo=args.demo, redactor=redactor, load=load, **hooks)
    if args.demo:
        print(
            f"glm-gateway {__version__} demo: http://{host}:{port}/v1 (simulator {sim_url}); "
            f"try: curl -s http://{host}:{port}/v1/chat/completions -H 'Content-Type: "
            'application/json\' -d \'{"model":"auto","messages":[{"role":"user",'
            '"content":"hi"}]}\'',
            file=sys.stderr,
            flush=True,
        )
    reloader = app.services.reloader
    serve(app, app.services.lifecycle, host, port, reloader.hangup if reloader else None)
    return 0


def _cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (in use, not an address here ...), or None."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"{exc.strerror or exc} (check --host)"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            hint = " (another process listens there: stop it or pick --port)"
            return f"{exc.strerror or exc}{hint if exc.errno == errno.EADDRINUSE else ''}"
    return None


def _demo_hooks(config: Config, sim_port: int) -> dict[str, Any]:
    from gateway.simulator import SimServer, sim_models_from_targets, start_simulator

    models = sim_models_from_targets(config.catalogue.targets)
    holder: dict[str, SimServer] = {}

    async def startup() -> None:
        holder["sim"] = await start_simulator(models, "127.0.0.1", sim_port)

    async def shutdown() -> None:
        if "sim" in holder:
            await holder["sim"].stop()

    return {"on_startup": startup, "on_shutdown": shutdown}


def _warn_if_inexact_tokens() -> None:
    from gateway.catalogue.tokens import exact_counting_problem

    problem = exact_counting_problem()
    if problem is not None:
        logging.getLogger("glm_gateway.tokens").warning(
            "EXACT PROMPT TOKEN COUNTING IS OFF: %s. Prompts are measured by their UTF-8 "
            "bytes, which over-count English about 4-5x: long prompts are refused as too long "
            "for context windows they fit. Reinstall glm-gateway with its dependencies "
            "(tiktoken) to count exactly.",
            problem,
        )


def _check_config(args: argparse.Namespace) -> int:
    return cmd_check_config(args, resolve_config)


def _parse_header_args(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep:
            raise GatewayError(f"--header {item!r}: expected 'Name: value'")
        out[name.strip().lower()] = value.strip()
    return out


def cmd_route(args: argparse.Namespace) -> int:
    from gateway.api.route import explain
    from gateway.catalogue.body import parse_body
    from gateway.catalogue.needs import resolve_needs
    from gateway.routing.planner import plan
    from gateway.routing.spread import Spread

    config = resolve_config(
        args.config, demo_simulator_url="http://127.0.0.1:0" if args.demo else None
    )
    body = parse_body(sys.stdin.buffer.read())
    needs = resolve_needs(body, _parse_header_args(args.header), config)
    routing = config.gateway.routing
    spread = None
    if routing.spread.enabled:  # the groups and shares, as /v1/route shows them
        spread = Spread(routing.spread, routing, config.catalogue.index)
    p = plan(needs, config.catalogue, routing, spread=spread, advance=False)
    out = explain(needs, p, str(body.get("model")))
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if p.candidates else 3


def cmd_catalog(args: argparse.Namespace) -> int:
    config = resolve_config(args.config)
    cat = config.catalogue
    skipped: dict[str, list[str]] = {}
    for s in cat.skipped:
        skipped.setdefault(s.variant, []).append(f"{s.provider}(no key)")
    rows = [("variant", "context", "params", "capabilities", "providers")]
    for vid, v in cat.variants.items():
        params = f"{v.params_total_b:g}B" if v.params_total_b else "-"
        if v.params_active_b:
            params += f"/{v.params_active_b:g}B"
        caps = ",".join(sorted(v.capabilities | ({"multimodal"} if v.multimodal else set())))
        provs = [
            t.provider if t.surface == DEFAULT_SURFACE else f"{t.provider}:{t.surface}"
            for t in cat.targets_for(vid)
        ] + skipped.get(vid, [])
        rows.append((vid, str(v.context or "-"), params, caps or "-", " ".join(provs) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from gateway.simulator import run_simulator, sim_models_from_targets

    url = f"http://{args.host}:{args.port}"
    config = resolve_config(args.config, demo_simulator_url=url)
    models = sim_models_from_targets(config.catalogue.targets)
    print(
        f"glm-gateway simulator on {url}: {len(models)} models; base URL per provider: "
        f"{url}/<provider>/v1",
        file=sys.stderr,
        flush=True,
    )
    run_simulator(models, args.host, args.port)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    import os

    from gateway.observability.top import TopError, run

    key = args.key or os.environ.get("GLM_GATEWAY_MASTER_KEY") or None
    try:
        return run(args.url, key, args.interval, args.once)
    except TopError as exc:
        print(f"glm-gateway top: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glm-gateway",
        description="OpenAI-compatible routing gateway for the GLM-4 model family.",
    )
    p.add_argument("--version", action="version", version=f"glm-gateway {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            metavar="DIR",
            help="config directory (default: $GLM_GATEWAY_CONFIG_DIR, else the config packaged "
            "with glm-gateway; `glm-gateway init DIR` writes an editable copy)",
        )

    s = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. On SIGTERM or SIGINT: /readyz answers 503 at once while "
        "requests are still served for server.shutdown_grace_s; then no new connections, and "
        "in-flight requests get server.drain_timeout_s; those still running end with a "
        "server_shutting_down error (an error event in a stream, else 503); exit 0. A second "
        "signal ends the grace and the drain at once. SIGHUP reloads the config directory "
        "(an invalid one is refused and logged; the running config keeps serving). At start: "
        "one line per provider whose key is not set (its deployments are skipped), and a "
        "WARNING if exact (cl100k) prompt token counting is unavailable in this install.",
    )
    with_config(s)
    s.add_argument("--host", default=None, help="bind address (default: server.host)")
    s.add_argument("--port", type=int, default=None, help="port (default: server.port)")
    s.add_argument("--demo", action="store_true", help=DEMO_HELP)
    s.add_argument(
        "--simulator",
        metavar="URL",
        help="send every provider's traffic to a running `glm-gateway simulate` at URL "
        "(provider keys not needed; client auth as configured)",
    )
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.add_argument("--workers", type=int, default=1, metavar="N", help=WORKERS_HELP)
    s.set_defaults(func=cmd_serve)

    add_config_parsers(sub, with_config)
    sub.choices["check-config"].set_defaults(func=_check_config)

    r = sub.add_parser(
        "route", help="explain routing for a chat body read from stdin (offline, no upstream)"
    )
    with_config(r)
    r.add_argument(
        "--header", "-H", action="append", default=[], help="an X-GLM-* header, 'Name: value'"
    )
    r.add_argument("--demo", action="store_true", help="use the demo deployments (no keys)")
    r.set_defaults(func=cmd_route)

    k = sub.add_parser("catalog", help="table of variants and where each can be served")
    with_config(k)
    k.set_defaults(func=cmd_catalog)

    m = sub.add_parser("simulate", help="run the provider simulator (GLM host behaviour, faults)")
    with_config(m)
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=9100)
    m.set_defaults(func=cmd_simulate)

    t = sub.add_parser("top", help="live terminal view of a running gateway (the dashboard's data)")
    t.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="the gateway's base URL (default: http://127.0.0.1:8080)",
    )
    t.add_argument("--key", help="the master key (default: $GLM_GATEWAY_MASTER_KEY)")
    t.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    t.add_argument("--once", action="store_true", help="print one frame and exit")
    t.set_defaults(func=cmd_top)

    add_keys_parser(sub)
    add_records_parsers(sub, with_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"glm-gateway: config error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"glm-gateway: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
