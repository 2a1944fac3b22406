"""``GET /dashboard`` (the ops page, static, offline) and ``GET /dashboard/data`` (its JSON).

The page and its script and stylesheet are public: they hold no data. The data endpoint needs
the master key when auth is on (``Authorization: Bearer <master key>``); the page asks for it
once and keeps it in ``sessionStorage``.
"""

from __future__ import annotations

import hmac
from importlib import resources

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from gateway.api.openapi import errors, json_body, operation
from gateway.api.ops import dashboard_data
from gateway.errors import AuthenticationFailed, NotFound, PermissionDenied
from gateway.services import Services

_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {"content-security-policy": CSP, "cache-control": "no-cache"}


def _asset(name: str) -> bytes:
    return resources.files("gateway").joinpath("dashboard", name).read_bytes()


def require_master(s: Services, authorization: str | None) -> None:
    """Raises unless auth is off or ``authorization`` carries the master key."""
    cfg = s.config.gateway.auth
    if not cfg.enabled:
        return
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationFailed(
            "The dashboard data needs the master key: send 'Authorization: Bearer <master key>'."
        )
    master = cfg.master_key
    if not master:
        raise PermissionDenied(
            "The dashboard data is only served for the master key, and none is configured: "
            "set auth.master_key (GLM_GATEWAY_MASTER_KEY)."
        )
    if not hmac.compare_digest(key.strip().encode(), master.encode()):
        raise PermissionDenied("The dashboard data is only served for the master key.")


def register_dashboard(app: FastAPI, s: Services) -> None:
    auth = "on" if s.config.gateway.auth.enabled else "off"
    page = _asset("index.html").replace(b"{{AUTH}}", auth.encode())
    assets = {name: _asset(name) for name in _ASSETS}
    backend = s.config.gateway.state.backend
    targets = s.config.catalogue.targets

    @app.get(
        "/dashboard",
        response_class=HTMLResponse,
        openapi_extra=operation("The ops page (no data in it).", {}, public=True),
    )
    async def _page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    @app.get(
        "/dashboard/data",
        openapi_extra=operation(
            "The dashboard's JSON (master key when auth is on).",
            {"200": json_body({"type": "object"}, "Totals, series, circuits."), **errors(401, 403)},
        ),
    )
    async def _data(request: Request) -> Response:
        require_master(s, request.headers.get("authorization"))
        body = await dashboard_data(
            s.access.stats, s.metrics, s.state, backend, targets, s.extras.get("records")
        )
        return Response(
            orjson.dumps(body),
            media_type="application/json",
            headers={"cache-control": "no-store"},
        )

    static = {"200": {"description": "The file.", "content": {t: {} for t in _ASSETS.values()}}}

    @app.get(
        "/dashboard/{name}",
        response_class=Response,
        openapi_extra=operation(
            "The page's script and stylesheet (app.js, style.css).",
            {**static, **errors(404)},
            public=True,
        ),
    )  # after /dashboard/data: routes match in order
    async def _static(name: str) -> Response:
        if name not in assets:
            raise NotFound(f"No dashboard file {name!r}; the page is GET /dashboard.")
        return Response(assets[name], media_type=_ASSETS[name], headers=_PAGE_HEADERS)
