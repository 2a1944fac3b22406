"""``/admin/keys``: create, list, show and revoke virtual keys; ``/admin/reload``: reload the
config (as SIGHUP does). Master key only.

``POST /admin/keys`` answers the token once (``key``); only its SHA-256 is stored. ``DELETE``
revokes (the record stays, so spend and the audit trail remain) and takes effect on every
replica at its next request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from gateway.api.openapi import errors, json_body, operation
from gateway.errors import BodyTooLarge, InvalidRequest, NotFound
from gateway.services import Services
from gateway.tenancy.keys import MICROS, KeyRecord, KeySpec, new_key, period_window

if TYPE_CHECKING:
    from gateway.records.service import Records


def _records(s: Services) -> Records | None:
    """PostgreSQL records when configured: keys are written there first (the source of
    truth), then copied into the state backend."""
    return s.extras.get("records")  # type: ignore[return-value]


async def _put(s: Services, record: KeyRecord) -> None:
    records = _records(s)
    if records is not None:
        await records.put_key(record)
    await s.state.put_key(record)
    s.auth.keys.put(record)


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body; BodyTooLarge (413) past ``limit`` bytes, as on the chat path."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(
                f"Request body is larger than the {limit} bytes this gateway accepts."
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _spec(raw: bytes, s: Services) -> KeySpec:
    try:
        spec = KeySpec.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(f"Invalid key spec: {detail}.", code="invalid_key_spec") from None
    unknown = [v for v in spec.allowed_variants or () if v not in s.config.catalogue.variants]
    if unknown:
        raise InvalidRequest(
            f"Unknown variant {unknown[0]!r} in allowed_variants; known: "
            f"{', '.join(s.config.catalogue.variants)}.",
            param="allowed_variants",
            code="invalid_key_spec",
        )
    known = {t.surface for t in s.config.catalogue.targets}
    strange = [n for n in spec.surfaces or () if n not in known]
    if strange:
        raise InvalidRequest(
            f"Unknown surface {strange[0]!r} in surfaces; configured: {', '.join(sorted(known))}.",
            param="surfaces",
            code="invalid_key_spec",
        )
    return spec


async def describe(s: Services, record: KeyRecord, now: float) -> dict[str, Any]:
    """A record as the API shows it, with its spend in the current budget period."""
    period, end = period_window(record.budget_period, now)
    spend = await s.state.key_spend(record.id, period)
    out = record.public()
    out["spend_usd"] = spend / MICROS
    out["period_ends_at"] = None if end == float("inf") else end
    return out


async def _find(s: Services, key_id: str) -> KeyRecord:
    records = _records(s)
    record = await (records.get_key(key_id) if records else s.state.get_key(key_id))
    if record is None:
        raise NotFound(f"No virtual key with id {key_id!r}.", code="key_not_found")
    return record


_KEY = json_body({"type": "object"}, "The key's record and its spend this period.")
_SPEC = {"$ref": "#/components/schemas/KeySpec"}


def register_admin(app: FastAPI, s: Services) -> None:
    @app.post(
        "/admin/keys",
        status_code=201,
        openapi_extra=operation(
            "Create a virtual key (the token is in the answer, once).",
            {"201": _KEY, **errors(400, 401, 403, 413)},
            body=_SPEC,
        ),
    )
    async def _create(request: Request) -> Response:
        s.auth.require_master(request.headers.get("authorization"))
        spec = _spec(await read_capped(request, s.config.gateway.server.max_body_bytes), s)
        now = time.time()
        token, record = new_key(spec, s.config.gateway.auth.key_defaults, now)
        await _put(s, record)
        out = await describe(s, record, now)
        out["key"] = token
        out["note"] = "Store this key now: the gateway keeps only its hash, never the key."
        return _json(out, 201)

    @app.get(
        "/admin/keys",
        openapi_extra=operation(
            "List virtual keys.",
            {"200": json_body({"type": "object"}, "The keys."), **errors(401, 403)},
        ),
    )
    async def _list(request: Request) -> Response:
        s.auth.require_master(request.headers.get("authorization"))
        now = time.time()
        db = _records(s)
        records = await (db.list_keys() if db else s.state.list_keys())
        return _json({"object": "list", "data": [await describe(s, r, now) for r in records]})

    @app.get(
        "/admin/keys/{key_id}",
        openapi_extra=operation("One virtual key.", {"200": _KEY, **errors(401, 403, 404)}),
    )
    async def _show(key_id: str, request: Request) -> Response:
        s.auth.require_master(request.headers.get("authorization"))
        return _json(await describe(s, await _find(s, key_id), time.time()))

    @app.delete(
        "/admin/keys/{key_id}",
        openapi_extra=operation("Revoke a virtual key.", {"200": _KEY, **errors(401, 403, 404)}),
    )
    async def _revoke(key_id: str, request: Request) -> Response:
        s.auth.require_master(request.headers.get("authorization"))
        now = time.time()
        record = (await _find(s, key_id)).revoke(now)
        await _put(s, record)
        return _json(await describe(s, record, now))

    @app.post(
        "/admin/reload",
        openapi_extra=operation(
            "Reload the config directory. An invalid config is refused (422, each problem with "
            "file and key) and the running config keeps serving.",
            {
                "200": json_body({"type": "object"}, "The new generation and what changed."),
                **errors(401, 403, 422),
            },
        ),
    )
    async def _reload(request: Request) -> Response:
        s.auth.require_master(request.headers.get("authorization"))
        reloader = s.reloader
        if reloader is None:
            raise NotFound("This process cannot reload its config.", code="reload_unavailable")
        result = await reloader.reload("POST /admin/reload")
        if not result.ok:
            raise result.error(reloader.source)
        return _json(result.body())
