"""``glm-gateway serve --workers N``: the checks and each worker's start (see
:mod:`gateway.edge.workers` for the processes and signals)."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable

from gateway.catalogue.catalogue import Config
from gateway.observability.redact import Redactor

WORKERS_HELP = (
    "worker processes sharing the port (default 1; about one per core). Needs "
    "state.backend: redis (GLM_GATEWAY_REDIS_URL), so limits, budgets and breakers are shared; "
    "/metrics and the dashboard add up every worker. Signals go to this (parent) process: "
    "SIGTERM/SIGINT drain every worker, SIGHUP reloads every worker; a worker that dies is "
    "started again. POST /admin/reload reloads only the worker that answers it"
)


def workers_refused(args: argparse.Namespace, config: Config) -> str | None:
    """Why ``--workers`` cannot be used as given, or None."""
    n = args.workers
    if n < 1:
        return f"--workers {n}: give 1 or more"
    if n == 1:
        return None
    if config.gateway.state.backend != "redis":
        return (
            f"--workers {n} needs shared state: with state.backend: "
            f"{config.gateway.state.backend} every worker would keep its own limits, budgets "
            "and breakers. Set GLM_GATEWAY_REDIS_URL (or state.backend: redis), or run one "
            "worker per process and scale with replicas"
        )
    if args.demo:
        return f"--workers {n} with --demo: run `glm-gateway simulate` and pass --simulator URL"
    return None


def serve_workers(
    workers: int,
    host: str,
    port: int,
    config: Config,
    load: Callable[[], Config],
    redactor: Redactor,
) -> int:
    """Bind ``host:port`` once and run ``workers`` gateway processes on it until stopped."""
    from gateway.edge.workers import Supervisor, bind

    sock = bind(host, port)
    first = [config]  # the first start of each worker uses the config checked here

    def worker(sock: socket.socket, index: int, directory: str) -> int:
        from gateway.app import create_app
        from gateway.edge.server import serve
        from gateway.observability.fleet import Fleet

        cfg = first[0] if first else load()  # a worker started again reads the config anew
        app = create_app(cfg, demo=False, redactor=redactor, load=load)
        services = app.services
        fleet = Fleet(directory, index, workers)
        services.metrics.fleet = fleet
        reloader = services.reloader

        async def started() -> None:
            await fleet.start(services.metrics, services.access.stats)

        serve(
            app,
            services.lifecycle,
            host,
            port,
            reloader.hangup if reloader else None,
            sock=sock,
            on_started=started,
        )
        return 0

    supervisor = Supervisor(sock, workers, worker)
    supervisor.start_all()
    first.clear()
    return supervisor.wait()
