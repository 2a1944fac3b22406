"""The FastAPI app for everything but the hot path, and the ASGI dispatcher in front of it.

With :mod:`gateway.api.anthropic`, the only modules that import FastAPI. The front-end APIs
(``/v1/chat/completions``, ``/v1/messages``) bypass FastAPI entirely
(:class:`gateway.edge.endpoint.Endpoint`), because its request/response machinery costs ~40%
of throughput on this path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.admin import read_capped, register_admin
from gateway.api.anthropic import anthropic_models, register_anthropic, wants_anthropic
from gateway.api.dashboard import register_dashboard
from gateway.api.models import models_body
from gateway.api.openapi import OpenAPIDocument, errors, json_body, operation
from gateway.api.ops import key_bad_targets, readiness, refresh_state_metrics
from gateway.api.route import explain
from gateway.catalogue.body import parse_body
from gateway.catalogue.needs import resolve_needs
from gateway.edge.asgi import Receive, Scope, Send, header_map, new_request_id, send_error
from gateway.edge.endpoint import Endpoint, bearer, no_capable_error
from gateway.edge.headers import HeadersTooLarge, head_bytes
from gateway.edge.request_log import SCOPE_ERROR, SCOPE_KEY_ID, RequestLog, scope_request_id
from gateway.edge.websocket import PATH as WS_PATH
from gateway.edge.websocket import ResponsesSocket
from gateway.errors import GatewayError, InternalError, NotFound
from gateway.services import Services

log = logging.getLogger("glm_gateway.http")


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error_response(err: GatewayError, request: Request) -> Response:
    request.scope[SCOPE_ERROR] = err.code or err.type
    headers = {"x-request-id": scope_request_id(request.scope), **err.headers}
    return Response(err.body_bytes(), err.status, headers, media_type="application/json")


def build_fastapi(
    s: Services, lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]]
) -> FastAPI:
    app = FastAPI(
        title="glm-gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        return _error_response(exc, request)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> Response:
        # Starlette answers with this, then re-raises to the server: GatewayASGI logs it once.
        return _error_response(InternalError(scope_request_id(request.scope)), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err: GatewayError = NotFound(
            f"No route for {request.method} {request.url.path}. Endpoints: POST "
            "/v1/chat/completions, POST /v1/messages, POST /v1/messages/count_tokens, POST "
            "/v1/responses, POST /v1/responses/compact, GET /v1/models, POST /v1/route, GET "
            "/healthz, /readyz, /metrics, /dashboard."
        )
        if exc.status_code == 405:
            err = GatewayError(
                f"Method {request.method} not allowed here.", code="method_not_allowed"
            )
            err.status, err.type = 405, "invalid_request_error"
        return _error_response(err, request)

    openapi_doc = OpenAPIDocument(
        app.openapi,
        ["auto", "glm-4", *s.config.catalogue.variants, *s.config.gateway.aliases],
        sorted(s.config.catalogue.provider_names),
    )
    obj: dict[str, Any] = {"type": "object"}

    @app.get("/openapi.json", openapi_extra=operation("This document.", {}, public=True))
    async def _openapi() -> Response:
        return Response(openapi_doc.bytes(), media_type="application/json")

    @app.get(
        "/v1/models",
        openapi_extra=operation(
            "The variant ids plus auto, in OpenAI's list shape.",
            {"200": json_body(obj, "The model list."), **errors(401, 403)},
        ),
    )
    async def _models(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if wants_anthropic(headers):  # Anthropic's list, and Anthropic's errors
            return await anthropic_models(s, headers, scope_request_id(request.scope))
        caller = await s.auth.identify(bearer(headers))
        request.scope[SCOPE_KEY_ID] = caller.key_id
        return ORJSONResponse(models_body(s.config))

    @app.get(
        "/v1/models/{model_id}",
        openapi_extra=operation(
            "One model: a variant id, auto, or (Anthropic clients) a claude-* name.",
            {"200": json_body(obj, "The model."), **errors(401, 403, 404)},
        ),
    )
    async def _model(model_id: str, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if wants_anthropic(headers):
            return await anthropic_models(s, headers, scope_request_id(request.scope), model_id)
        await s.auth.identify(bearer(headers))
        for item in models_body(s.config)["data"]:
            if item["id"] == model_id:
                return ORJSONResponse(item)
        raise NotFound(f"The model {model_id!r} does not exist.", param="model_id")

    @app.post(
        "/v1/route",
        openapi_extra=operation(
            "Explain routing for a chat body (no upstream call).",
            {
                "200": json_body(obj, "Needs, ranked candidates, rejections."),
                **errors(400, 401, 403, 404, 413),
            },
            body={"$ref": "#/components/schemas/ChatCompletionRequest"},
        ),
    )
    async def _route(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        caller = await s.auth.identify(bearer(headers))
        request.scope[SCOPE_KEY_ID] = caller.key_id
        raw = await read_capped(request, s.config.gateway.server.max_body_bytes)
        body = parse_body(raw, s.config.gateway.limits)
        min_context = None
        api = request.query_params.get("api") or ("messages" if wants_anthropic(headers) else "")
        if api in ("messages", "responses"):  # another API's body: its front-end's chat form
            inbound = s.frontends[api].parse(body, headers)
            body, min_context = inbound.chat, inbound.min_context
        needs = resolve_needs(body, headers, s.config)
        if min_context and min_context > (needs.min_context or 0):
            needs.min_context = min_context
        plan = await s.router.plan(needs, caller=caller)
        out = explain(needs, plan, str(body.get("model")), await key_bad_targets(s))
        if not plan.candidates:
            out["error"] = no_capable_error(needs, plan).body()["error"]
        first = plan.candidates[0].target if plan.candidates else None
        return ORJSONResponse(
            out,
            headers={
                "x-request-id": scope_request_id(request.scope),
                "x-glm-variant": first.variant.id if first else "none",
                "x-glm-provider": first.provider if first else "none",
                "x-glm-attempts": "0",
            },
        )

    @app.get("/healthz", openapi_extra=operation("Alive.", {}, public=True))
    async def _healthz() -> Response:
        return ORJSONResponse({"status": "ok"})

    @app.get(
        "/readyz",
        openapi_extra=operation("Config loaded; state backend reachable.", {}, public=True),
    )
    async def _readyz() -> Response:
        status, body = await readiness(s)
        return ORJSONResponse(body, status_code=status)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        openapi_extra=operation("Prometheus exposition.", {}, public=True),
    )
    async def _metrics() -> Response:
        backend, targets = s.config.gateway.state.backend, s.config.catalogue.targets
        await refresh_state_metrics(s.metrics, s.state, backend, targets)
        fleet = s.metrics.fleet  # serve --workers N: add the sibling workers' series
        stats = s.access.stats
        body = s.metrics.render() if fleet is None else await fleet.render(s.metrics, stats)
        return Response(body, media_type="text/plain; version=0.0.4")

    register_dashboard(app, s)
    register_admin(app, s)
    register_anthropic(app, s)

    return app


class GatewayASGI:
    """Routes the hot path to the raw handler and everything else to FastAPI.

    Every HTTP request is first held to ``server.max_header_bytes`` (431) and its task is
    tracked by the lifecycle while it runs, so a shutdown can drain it.
    """

    def __init__(self, fastapi_app: FastAPI, services: Services) -> None:
        self.fastapi = fastapi_app
        self.services = services
        self._max_head = services.config.gateway.server.max_header_bytes
        self._in_flight = services.lifecycle.tasks
        self._log = RequestLog(services.access, services.config.gateway.server.trusted_proxies)

    @property
    def routes(self) -> dict[str, Endpoint]:
        """``POST`` path → the raw endpoint of one front-end API, on the current config (the
        query string is not part of the path: ``/v1/messages?beta=true`` is ``/v1/messages``)."""
        return self.services.generation.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                await self._socket(scope, receive, send)
            else:
                await self.fastapi(scope, receive, send)  # lifespan
            return
        size = head_bytes(scope)
        if size > self._max_head:
            await self._refuse_head(scope, send, HeadersTooLarge(size, self._max_head))
            return
        task = asyncio.current_task()
        assert task is not None  # uvicorn runs each request in a task of its own
        self._in_flight.add(task)
        try:
            # self.routes, written out (a property call fewer per request)
            routes = self.services.generation.routes
            endpoint = routes.get(scope["path"]) if scope["method"] == "POST" else None
            if endpoint is not None:
                await endpoint(scope, receive, send, task)
            else:
                await self._fastapi(scope, receive, send)
        finally:
            self._in_flight.discard(task)

    async def _socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """WebSocket: Responses on ``/v1/responses`` only; anything else is refused (1008)."""
        head = sum(len(k) + len(v) + 4 for k, v in scope["headers"]) + len(scope["path"])
        if scope["path"] != WS_PATH or head > self._max_head:
            started = time.perf_counter()
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            rid = new_request_id()  # a refused upgrade is answered 403 with no headers of ours
            self._log.line(scope, header_map(scope), rid, 403, time.perf_counter() - started)
            return
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            # Each message is served by the endpoint of the config current when it arrives.
            await ResponsesSocket(lambda: self.routes[WS_PATH])(scope, receive, send)
        finally:
            self._in_flight.discard(task)

    async def _refuse_head(self, scope: Scope, send: Send, err: HeadersTooLarge) -> None:
        """431 before anything else reads the head: a new id (the client's is not read)."""
        started, rid = time.perf_counter(), new_request_id()
        scope[SCOPE_ERROR] = err.code or err.type
        await send_error(send, err, [(b"x-request-id", rid.encode())])
        self._log.line(scope, {}, rid, err.status, time.perf_counter() - started)

    async def _fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._log(self.fastapi, scope, receive, send)
        except Exception:
            # Already answered (500, OpenAI's shape) by the FastAPI handler: log it once here,
            # with the request id the client was given, and do not hand it to the server.
            log.exception(
                "unhandled error on %s %s (request %s)",
                scope.get("method"),
                scope.get("path"),
                scope.get("glm_request_id", "-"),
            )
