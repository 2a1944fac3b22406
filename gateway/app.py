"""create_app(): builds every object the gateway runs on and wires them. No logic here."""

from __future__ import annotations

import gc
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast

from fastapi import FastAPI

from gateway.api.http import GatewayASGI, build_fastapi
from gateway.catalogue.catalogue import Config, config_secrets
from gateway.catalogue.loader import load_config
from gateway.edge.endpoint import Endpoint
from gateway.edge.lifecycle import Lifecycle
from gateway.edge.reload import Reloader, initial_metrics
from gateway.frontends.base import FrontEnd
from gateway.frontends.chat import ChatFrontEnd
from gateway.frontends.messages_frontend import MessagesFrontEnd
from gateway.frontends.responses_compact import CompactFrontEnd
from gateway.frontends.responses_frontend import ResponsesFrontEnd
from gateway.observability.access import AccessLog
from gateway.observability.loop import LoopLagMonitor
from gateway.observability.metrics import Metrics
from gateway.observability.redact import Redactor
from gateway.observability.traces import build_tracing
from gateway.providers.base import Provider
from gateway.providers.litellm_adapter import LiteLLMProvider
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.quota import QuotaReader, QuotaSource, QuotaWindow, spent_until
from gateway.routing.affinity import Affinity
from gateway.routing.router import Router
from gateway.services import Generation, Services
from gateway.state.base import StateStore
from gateway.state.memory import MemoryState
from gateway.state.redis_target import redis_target
from gateway.tenancy.auth import Authenticator, KeyBook
from gateway.tenancy.limits import Admission
from gateway.tenancy.shedding import InFlightGate

if TYPE_CHECKING:
    from gateway.records.service import Records

GC_GEN0_THRESHOLD = 50_000
"""Allocations between young-generation collections once the app has started (CPython's
default is 700). A request allocates well over 700 container objects and leaves no reference
cycle behind (``bench/inproc.py`` counts 0 cyclic objects per request), so at the default the
collector ran on nearly every request and walked the whole young heap for nothing."""


def quiet_gc() -> None:
    """Freeze what start-up built and make young collections rare (called once serving).

    ``gc.freeze()`` moves every object alive now (modules, the catalogue, FastAPI's routes,
    pydantic models) out of the collector's sight: they live as long as the process, and a full
    collection no longer walks them. Measured in process (``bench/inproc.py``): the gateway's
    own Python cost per non-streaming request went from ~195 to ~130 µs.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def build_state(config: Config, metrics: Metrics | None = None) -> StateStore:
    st = config.gateway.state
    target = redis_target(st) if st.backend == "redis" else None
    if target is not None:
        from gateway.state.redis import RedisState

        return RedisState(
            target,
            config.gateway.breaker,
            timeout_ms=st.redis_timeout_ms,
            prefix=st.redis_prefix,
            metrics=metrics,
        )
    return MemoryState(config.gateway.breaker)


def build_redactor(config: Config) -> Redactor:
    """The process's redactor: every secret the config holds, and credential shapes."""
    return Redactor(config_secrets(config))


def build_generation(
    config: Config,
    services: Services | None,
    *,
    state: StateStore,
    keys: KeyBook,
    metrics: Metrics,
    redactor: Redactor,
    previous: Generation | None = None,
) -> Generation:
    """Every object built from ``config``; its endpoints too once ``services`` exists."""
    admission = Admission(config, state, keys=keys, metrics=metrics)
    # Each admitted request holds at most one upstream connection at a time: a pool as large as
    # the gate (``max_in_flight``, a restart setting: the running gate's after a reload) never
    # makes an admitted request wait for a connection (tests/chaos/test_capacity.py).
    pool = services.gate.limit if services is not None else config.gateway.server.max_in_flight
    providers: dict[str, Provider] = {"openai": OpenAICompatProvider(pool_size=pool)}
    if any(t.adapter == "litellm" for t in config.catalogue.targets):
        providers["litellm"] = LiteLLMProvider()
    key = thinking_key(config, previous.thinking_key if previous else None)
    gen = Generation(
        config=config,
        router=Router(
            config,
            providers,
            state,
            admission=admission,
            redactor=redactor,
            affinity=build_affinity(config, state, metrics, admission),
        ),
        auth=Authenticator(config.gateway.auth, keys),
        providers=providers,
        frontends=build_frontends(config, key),
        thinking_key=key,
        number=previous.number + 1 if previous else 1,
    )
    if services is not None:
        attach_routes(services, gen)
    return gen


def build_affinity(
    config: Config, state: StateStore, metrics: Metrics, admission: Admission
) -> Affinity | None:
    """Session affinity, unless ``routing.affinity.enabled`` is false."""
    cfg = config.gateway.routing.affinity
    if not cfg.enabled:
        return None
    known = {t.id: t.provider for t in config.catalogue.targets}
    return Affinity(cfg, state, metrics, blocked=admission.blocked_ids, known=known)


def attach_routes(services: Services, gen: Generation) -> None:
    """The hot-path endpoint of each front-end API, serving ``gen``."""
    gen.routes = {f"/v1/{path}": Endpoint(services, fe, gen) for path, fe in gen.frontends.items()}


def build_services(
    config: Config, *, demo: bool = False, redactor: Redactor | None = None
) -> Services:
    metrics = Metrics()
    redactor = redactor if redactor is not None else build_redactor(config)
    server = config.gateway.server
    state = build_state(config, metrics)
    records = build_records(config, state, metrics)
    keys = KeyBook(state, records)
    gen = build_generation(config, None, state=state, keys=keys, metrics=metrics, redactor=redactor)
    services = Services(
        generation=gen,
        state=state,
        keys=keys,
        metrics=metrics,
        access=AccessLog(
            metrics,
            log_prompts=config.gateway.logging.log_prompts,
            redactor=redactor,
        ),
        demo=demo,
        lifecycle=Lifecycle(server.shutdown_grace_s, server.drain_timeout_s),
        gate=InFlightGate(server.max_in_flight, server.max_queued, server.queue_timeout_s, metrics),
        tracing=build_tracing(redactor),
    )
    attach_routes(services, gen)
    if records is not None:
        services.extras["records"] = records
        services.access.ledger = records.on_request
    return services


def build_records(config: Config, state: StateStore, metrics: Metrics) -> Records | None:
    """PostgreSQL records when ``database.url`` is set (the only import of
    :mod:`gateway.records`); else None, with a WARNING when keys then live in Redis alone."""
    if config.gateway.database.url is None:
        if config.gateway.state.backend == "redis":
            logging.getLogger("glm_gateway.records").warning(
                "Virtual keys and their spend live in Redis only: a FLUSHALL, an eviction or a "
                "restart without persistence loses them. Set GLM_GATEWAY_DATABASE_URL "
                "(PostgreSQL) to keep them."
            )
        return None
    from gateway.records.service import Records

    return Records(config.gateway.database, state, metrics)


def build_reloader(
    services: Services, redactor: Redactor, load: Callable[[], Config] | None
) -> Reloader:
    """Reloads from ``load`` (default: the loader on the running config's directory)."""
    source = services.config.source_dir

    def rebuild(config: Config, previous: Generation) -> Generation:
        return build_generation(
            config,
            services,
            state=services.state,
            keys=services.keys,
            metrics=services.metrics,
            redactor=redactor,
            previous=previous,
        )

    return Reloader(services, load or (lambda: load_config(source)), rebuild, redactor)


def build_quota_reader(services: Services) -> QuotaReader:
    """Reads plan quotas (surfaces with ``quota:``) over the current generation's pool."""

    async def fetch(url: str, headers: Mapping[str, str], limit_s: float) -> tuple[int, bytes]:
        sender = cast(OpenAICompatProvider, services.providers["openai"])
        return await sender.get(url, headers, limit_s)

    async def report(src: QuotaSource, windows: list[QuotaWindow]) -> None:
        """Gauges; and a spent plan window opens its surface's circuits until the reset."""
        for w in windows:
            services.metrics.set_plan_quota(
                src.provider, src.surface, w.window, w.remaining, w.resets_at
            )
        now = time.time()
        until = spent_until(windows, now)
        if until is not None:
            ids = tuple(
                t.id
                for t in services.config.catalogue.targets
                if t.provider == src.provider and t.surface == src.surface
            )
            await services.state.open_until(ids, until, "quota", now)

    return QuotaReader(lambda: services.config, fetch, report)


def create_app(
    config: Config,
    *,
    demo: bool = False,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    redactor: Redactor | None = None,
    load: Callable[[], Config] | None = None,
) -> GatewayASGI:
    """The ASGI app: raw hot path for chat completions, FastAPI for the rest. ``redactor``:
    the one the log formatter got (default: built from ``config``). ``load``: how a reload
    reads the config again (default: :func:`load_config` on ``config.source_dir``)."""
    redactor = redactor if redactor is not None else build_redactor(config)
    services = build_services(config, demo=demo, redactor=redactor)
    reloader = services.reloader = build_reloader(services, redactor, load)
    initial_metrics(services)
    loop_lag = LoopLagMonitor(services.metrics, services.access.stats)
    quota = build_quota_reader(services)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if on_startup is not None:
            await on_startup()
        records = services.extras.get("records")
        if records is not None:
            await cast("Records", records).start(services.keys)
        loop_lag.start()
        quota.start()
        quiet_gc()
        try:
            yield
        finally:
            await quota.stop()
            await loop_lag.stop()
            await reloader.aclose()  # every generation's upstream pools
            await services.keys.aclose()
            if records is not None:
                await cast("Records", records).aclose()  # the ledger's queue written or spooled
            await services.state.aclose()
            if services.tracing is not None:
                await services.tracing.aclose()
            if on_shutdown is not None:
                await on_shutdown()

    fastapi_app = build_fastapi(services, lifespan)
    return GatewayASGI(fastapi_app, services)


def thinking_key(config: Config, fallback: bytes | None = None) -> bytes:
    """The key that signs returned thinking blocks: configured, else derived from the master
    key (replicas agree without more config), else ``fallback`` (the running config's, on a
    reload), else random for this process."""
    messages = config.gateway.frontends.messages
    if messages.thinking_key:
        return messages.thinking_key.encode()
    master = config.gateway.auth.master_key
    if master:
        return hmac.new(master.encode(), b"glm-gateway thinking signatures", "sha256").digest()
    return fallback if fallback is not None else os.urandom(32)


def build_frontends(config: Config, key: bytes) -> dict[str, FrontEnd]:
    """Path under ``/v1/`` → the front-end API served there (one line per API)."""
    known = {*config.catalogue.variants, *config.gateway.aliases}
    claude = {  # the default table names shipped aliases; a config without them gets auto
        name: model if model in known else "auto"
        for name, model in config.gateway.frontends.messages.claude_models.items()
    }
    return {
        "chat/completions": ChatFrontEnd(),
        "messages": MessagesFrontEnd(
            claude,
            key,
            config.gateway.frontends.messages.max_output_tokens,
        ),
        "responses": ResponsesFrontEnd(key, config.gateway.frontends.responses.web_search),
        "responses/compact": CompactFrontEnd(key, config.gateway.frontends.responses.web_search),
    }
