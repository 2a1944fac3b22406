"""The Anthropic-flavoured endpoints beside ``POST /v1/messages`` (which is on the hot path):
``POST /v1/messages/count_tokens``, ``GET /v1/models`` in Anthropic's list shape, ``HEAD /``.

Claude Code asks ``GET /v1/models?limit=1000`` at start and keeps only ids that start with
``claude``: the list carries the configured ``claude-*`` names (each routed by the mapping
table) before the GLM ids. Errors here are in Anthropic's shape too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from gateway.api.admin import read_capped
from gateway.api.openapi import errors, json_body, operation
from gateway.catalogue.body import parse_body
from gateway.catalogue.catalogue import Config
from gateway.catalogue.needs import resolve_needs
from gateway.edge.endpoint import EXACT_IN_THREAD_BYTES, bearer
from gateway.edge.request_log import SCOPE_KEY_ID, scope_request_id
from gateway.errors import GatewayError, NotFound
from gateway.frontends.base import FrontEnd
from gateway.services import Services

_EPOCH_ISO = "1970-01-01T00:00:00Z"


def wants_anthropic(headers: dict[str, str]) -> bool:
    return "anthropic-version" in headers


def anthropic_models_body(config: Config) -> dict[str, Any]:
    """Anthropic's ``ModelInfo`` list: the ``claude-*`` names of the mapping table, then the
    GLM variant ids (all routable through ``/v1/messages``)."""
    table = config.gateway.frontends.messages.claude_models
    data: list[dict[str, Any]] = [
        {
            "type": "model",
            "id": name,
            "display_name": f"{name} → {target} (glm-gateway)",
            "created_at": _EPOCH_ISO,
        }
        for name, target in table.items()
        if name != "*"
    ]
    for vid, v in config.catalogue.variants.items():
        year, month = v.released.split("-")
        data.append(
            {
                "type": "model",
                "id": vid,
                "display_name": v.name,
                "created_at": f"{year}-{month}-01T00:00:00Z",
            }
        )
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


async def anthropic_models(
    s: Services, headers: dict[str, str], rid: str, model_id: str | None = None
) -> Response:
    """``GET /v1/models[/{id}]`` for an Anthropic client: its shapes, its errors (``rid``: the
    request id)."""
    fe = s.frontends["messages"]
    try:
        await s.auth.identify(bearer(headers))
    except GatewayError as err:
        return _error(fe, err, rid)
    listing = anthropic_models_body(s.config)
    out: Any = listing
    if model_id is not None:
        out = next((m for m in listing["data"] if m["id"] == model_id), None)
        if out is None:
            missing = NotFound(f"The model {model_id!r} does not exist.", param="model_id")
            return _error(fe, missing, rid)
    return Response(orjson.dumps(out), media_type="application/json", headers={"x-request-id": rid})


def _error(fe: FrontEnd, err: GatewayError, request_id: str) -> Response:
    status, body, _ = fe.error(err, request_id)
    headers = {"x-request-id": request_id, **err.headers}
    return Response(body, status, headers, media_type="application/json")


def register_anthropic(app: FastAPI, s: Services) -> None:
    fe = s.frontends["messages"]
    obj: dict[str, Any] = {"type": "object"}

    @app.post(
        "/v1/messages/count_tokens",
        openapi_extra=operation(
            "Anthropic Messages: input tokens of a body (the gateway's conservative count).",
            {
                "200": json_body(obj, "{input_tokens}."),
                **errors(400, 401, 403, 404, 413, anthropic=True),
            },
        ),
    )
    async def _count_tokens(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        rid = scope_request_id(request.scope)
        try:
            request.scope[SCOPE_KEY_ID] = (await s.auth.identify(bearer(headers))).key_id
            raw = await read_capped(request, s.config.gateway.server.max_body_bytes)
            body = parse_body(raw, s.config.gateway.limits)
            body.setdefault("max_tokens", 1)  # count_tokens takes no max_tokens
            inbound = fe.parse(body, headers)
            needs = resolve_needs(inbound.chat, headers, s.config)
            if needs.prompt.upper > EXACT_IN_THREAD_BYTES:  # tokenizing holds the CPU
                count = await asyncio.to_thread(needs.prompt.exact)
            else:
                count = needs.prompt.exact()
        except GatewayError as err:
            return _error(fe, err, rid)
        return Response(
            orjson.dumps({"input_tokens": count}),
            media_type="application/json",
            headers={"x-request-id": rid},
        )

    def stateless() -> NotFound:
        return NotFound(
            "This gateway keeps no conversation state: responses are not stored, so they cannot "
            "be retrieved, deleted or listed. Send the whole input with each request.",
            code="response_not_found",
        )

    @app.api_route(
        "/v1/responses/{response_id}",
        methods=["GET", "DELETE"],
        openapi_extra=operation("Stored responses: none (stateless).", errors(401, 404)),
    )
    async def _stored(response_id: str, request: Request) -> Response:
        await s.auth.identify(bearer({k.lower(): v for k, v in request.headers.items()}))
        raise stateless()

    @app.get(
        "/v1/responses/{response_id}/input_items",
        openapi_extra=operation("Stored input items: none (stateless).", errors(401, 404)),
    )
    async def _stored_items(response_id: str, request: Request) -> Response:
        await s.auth.identify(bearer({k.lower(): v for k, v in request.headers.items()}))
        raise stateless()

    @app.head(
        "/",
        response_class=Response,
        openapi_extra=operation(
            "Reachability probe (some Anthropic clients send it).",
            {"200": {"description": "Reachable; no body."}},
            public=True,
        ),
    )
    async def _head_root() -> Response:
        return Response(status_code=200)
