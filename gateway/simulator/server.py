"""The simulator's HTTP server: routes, the request pipeline, start and stop.

Routes::

    POST   /{provider}/.../chat/completions   answer as that provider's host would
    POST   /{provider}/anthropic/v1/messages  zhipu providers: the host's native Anthropic
                                              Messages endpoint (see :mod:`.messages`)
    GET    /{provider}/.../models             the provider's model ids (OpenAI list)
    GET    /_sim/requests                     the last 200 provider requests, newest last
    DELETE /_sim/requests                     clear them
    POST   /_sim/faults[?seed=N]              replace the global fault rules (JSON list);
                                              ``seed`` restarts the RNG behind ``rate``
    DELETE /_sim/faults                       drop global rules and every ``times`` counter
    GET    /_sim/streams                      progressive answers: open, opened, completed,
                                              client_gone, cut (DELETE zeroes them)
    POST   /_sim/plans                        Coding Plan windows per provider (JSON object;
                                              see :mod:`.plans`); DELETE drops them
    GET    /{provider}/api/monitor/usage/quota/limit   the plan's quota (Z.ai's shape)
    GET    /_sim/cache                        the prompt cache: TTL, prompt and cached tokens
    DELETE /_sim/cache[?ttl_s=S]              forget every prefix (and set the TTL)
    GET    /_sim/healthz                      200

A chat request goes: record -> provider -> auth -> JSON -> model -> scan -> fault -> host
checks -> answer (JSON body or SSE). All state lives on :class:`SimState` (:mod:`.state`), one
per app; every request is logged with ``api`` naming its surface (``chat``, ``models``,
``messages``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from gateway.simulator import dialects as d
from gateway.simulator.behaviour import (
    BadRequest,
    Envelope,
    Scan,
    completion_body,
    plan_answer,
    prompt_tokens,
    scan_messages,
    stream_plan,
)
from gateway.simulator.checks import check_request
from gateway.simulator.faults import DirectiveError, Rule, echo_key, parse_rules
from gateway.simulator.malformed import malformed_wire
from gateway.simulator.messages import messages_route
from gateway.simulator.models import SimModel
from gateway.simulator.plans import QUOTA_PATH, PlanError
from gateway.simulator.state import STATE, SimState
from gateway.simulator.writer import (
    error_response,
    fault_head,
    json_response,
    rule_headers,
    send_plan,
    send_wire,
    trickle,
)

__all__ = ["STATE", "SimServer", "SimState", "create_sim_app", "run_simulator", "start_simulator"]

log = logging.getLogger(__name__)


# --- provider routes ---------------------------------------------------------------------------


async def _provider_route(request: web.Request) -> web.StreamResponse:
    """Dispatch ``/{provider}/...`` by method and path suffix."""
    path = request.path
    if request.method == "POST" and path.endswith("/chat/completions"):
        return await _chat(request)
    if request.method == "POST" and path.endswith("/anthropic/v1/messages"):
        return await messages_route(request)
    if request.method == "GET" and path.endswith("/models"):
        return _models(request)
    if request.method == "GET" and path.endswith(QUOTA_PATH):
        return _quota(request)
    return error_response(d.not_found(path))


def _quota(request: web.Request) -> web.Response:
    """A Coding Plan's quota, as Z.ai's monitor endpoint answers it (see :mod:`.plans`)."""
    provider, refused = _authorised_get(request, "quota")
    if refused is not None:
        return refused
    return json_response(request.app[STATE].plans.quota(provider))


def _authorised_get(request: web.Request, api: str) -> tuple[str, web.Response | None]:
    """Record a GET on a provider's side endpoint; (provider, the host's refusal or None)."""
    state = request.app[STATE]
    provider = request.match_info["provider"]
    state.record(request, provider, None, api=api)
    dialect = state.table.dialect(provider)
    if dialect is None:
        return provider, error_response(d.unknown_provider(provider))
    refusal = d.check_auth(dialect, request.headers.get("Authorization"))
    return provider, None if refusal is None else error_response(refusal)


def _models(request: web.Request) -> web.Response:
    provider, refused = _authorised_get(request, "models")
    if refused is not None:
        return refused
    state = request.app[STATE]
    data = [
        {"id": m, "object": "model", "created": 0, "owned_by": provider}
        for m in state.table.model_ids(provider)
    ]
    return json_response({"object": "list", "data": data})


async def _chat(request: web.Request) -> web.StreamResponse:
    """Record, then refuse as the host would (auth, body, model), apply a fault, or answer."""
    state = request.app[STATE]
    provider = request.match_info["provider"]
    body = await state.read_body(request, provider, "chat")
    dialect = state.table.dialect(provider)
    if dialect is None:
        return error_response(d.unknown_provider(provider))
    refusal = d.check_auth(dialect, request.headers.get("Authorization"))
    if refusal is not None:
        return error_response(refusal)
    if not isinstance(body, dict):
        return error_response(
            d.invalid_body(dialect, "We could not parse the JSON body of your request.")
        )
    spent = state.plans.refuse(provider, request.path)
    if spent is not None:
        return error_response(spent)
    model = state.table.get(provider, body.get("model"))
    if model is None:
        return error_response(d.model_not_found(dialect, body.get("model")))
    rid = body.get("request_id")
    if dialect == d.ZHIPU and isinstance(rid, str) and not state.fresh_request_id(rid):
        return error_response(d.zhipu_error(400, "1231", f"request_id 重复 (duplicate): {rid}"))
    try:
        scan = scan_messages(body.get("messages"))
        rule = echo_key(
            state.faults.select(scan.directives, model), request.headers.get("Authorization")
        )
    except BadRequest as exc:
        return error_response(d.invalid_body(dialect, str(exc), "messages"))
    except DirectiveError as exc:
        return error_response(d.bad_directive(str(exc)))
    if rule is not None:
        shape = functools.partial(d.fault_error, dialect)
        early = await fault_head(request, state, rule, body.get("stream") is True, shape)
        if early is not None:
            return early
    return await _answer(request, state, model, body, scan, rule)


async def _answer(
    request: web.Request,
    state: SimState,
    model: SimModel,
    body: dict[str, Any],
    scan: Scan,
    rule: Rule | None,
) -> web.StreamResponse:
    """Apply the host's capability and length checks, then answer as JSON or SSE."""
    prompt = prompt_tokens(scan, body.get("tools"))
    refusal = check_request(model, body, scan, prompt)
    if refusal is not None:
        return error_response(refusal, rule)
    uid = state.next_uid()
    answer = plan_answer(model, body, scan, prompt, uid, rule)
    where = f"{request.match_info['provider']}/{body['model']}"
    cached = state.prefix_cache.serve(where, body.get("messages"), prompt)
    answer = dataclasses.replace(answer, cached_tokens=cached)
    request_id = body.get("request_id")
    env = Envelope(
        "chatcmpl-" + uid,
        int(time.time()),
        str(body["model"]),
        model.dialect,
        request_id if isinstance(request_id, str) else uid,
    )
    plan = None
    if body.get("stream") is True:
        opts = body.get("stream_options")
        usage = isinstance(opts, dict) and opts.get("include_usage") is True
        error = rule.stream_error if rule is not None else None
        plan = stream_plan(answer, env, usage, error)
    if rule is not None and rule.trickle_ms > 0:
        return await trickle(request, state, rule, plan)
    if rule is not None and rule.malformed is not None:
        err = d.fault_error(model.dialect, 200, rule.code, rule.message).body
        raw = orjson.dumps(completion_body(answer, env))
        wire = malformed_wire(rule.malformed, plan, raw, err, rule.status, rule.cut_after_chunks)
        if wire is not None:
            return await send_wire(request, state, wire, rule)
    if plan is not None:
        return await send_plan(request, state, plan, rule)
    return json_response(completion_body(answer, env), headers=rule_headers(rule))


# --- /_sim control routes ----------------------------------------------------------------------


async def _get_cache(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].prefix_cache.stats())


async def _clear_cache(request: web.Request) -> web.Response:
    raw = request.query.get("ttl_s")
    try:
        ttl = float(raw) if raw is not None else None
    except ValueError:
        ttl = -1.0
    if ttl is not None and not ttl > 0:
        return error_response(d.bad_directive(f"ttl_s must be a positive number, got {raw!r}"))
    request.app[STATE].prefix_cache.clear(ttl)
    return json_response(request.app[STATE].prefix_cache.stats())


async def _get_requests(request: web.Request) -> web.Response:
    return json_response(list(request.app[STATE].requests))


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].requests.clear()
    return json_response({"cleared": True})


async def _set_faults(request: web.Request) -> web.Response:
    try:
        rules = parse_rules(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, DirectiveError) as exc:
        return error_response(d.bad_directive(str(exc)))
    faults = request.app[STATE].faults
    seed = request.query.get("seed")
    if seed is not None:
        if not seed.lstrip("-").isdigit():
            return error_response(d.bad_directive(f"seed must be an integer, not {seed!r}"))
        faults.seed(int(seed))
    faults.set_global(rules)
    return json_response({"rules": len(rules)})


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.reset()
    return json_response({"cleared": True})


async def _get_streams(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].streams.snapshot())


async def _clear_streams(request: web.Request) -> web.Response:
    request.app[STATE].streams.reset()
    return json_response({"cleared": True})


async def _set_plans(request: web.Request) -> web.Response:
    try:
        request.app[STATE].plans.set(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, PlanError) as exc:
        return error_response(d.bad_directive(str(exc)))
    return json_response({"plans": True})


async def _clear_plans(request: web.Request) -> web.Response:
    request.app[STATE].plans.clear()
    return json_response({"cleared": True})


async def _healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "models": len(request.app[STATE].table)})


def create_sim_app(models: Iterable[SimModel]) -> web.Application:
    """The simulator as an aiohttp application serving ``models``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = SimState(models)
    app.router.add_get("/_sim/requests", _get_requests)
    app.router.add_delete("/_sim/requests", _clear_requests)
    app.router.add_post("/_sim/faults", _set_faults)
    app.router.add_delete("/_sim/faults", _clear_faults)
    app.router.add_get("/_sim/streams", _get_streams)
    app.router.add_delete("/_sim/streams", _clear_streams)
    app.router.add_post("/_sim/plans", _set_plans)
    app.router.add_delete("/_sim/plans", _clear_plans)
    app.router.add_get("/_sim/cache", _get_cache)
    app.router.add_delete("/_sim/cache", _clear_cache)
    app.router.add_get("/_sim/healthz", _healthz)
    app.router.add_route("*", "/{provider}/{tail:.+}", _provider_route)
    return app


# --- running it --------------------------------------------------------------------------------


class SimServer:
    """A running simulator: where it listens, and how to stop it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def app(self) -> web.Application:
        """The aiohttp application (its :class:`SimState` is ``app[STATE]``)."""
        return self._runner.app

    async def stop(self) -> None:
        """Stop listening, end hanging requests, close connections."""
        self._runner.app[STATE].closing = True
        await self._runner.cleanup()


async def start_simulator(
    models: Iterable[SimModel], host: str = "127.0.0.1", port: int = 0
) -> SimServer:
    """Start the simulator on ``host:port`` (0 = an ephemeral port) and return it running."""
    runner = web.AppRunner(
        create_sim_app(models), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1] if port == 0 else port
    return SimServer(runner, host, int(bound))


def run_simulator(models: Iterable[SimModel], host: str = "127.0.0.1", port: int = 8090) -> None:
    """Serve until interrupted (blocking, for the CLI); uses uvloop when it is installed."""
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(list(models), host, port))


async def _serve(models: list[SimModel], host: str, port: int) -> None:
    server = await start_simulator(models, host, port)
    log.info("simulator serving %d models on %s", len(models), server.url)
    stopped = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    try:
        await stopped.wait()
    finally:
        await server.stop()
