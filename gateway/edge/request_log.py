"""An ``X-Request-Id`` and an access line for every request no front-end endpoint handles.

The front-end endpoints (:mod:`gateway.edge.endpoint`) write their own, richer line. Everything
else — models, route, count_tokens, health, readiness, metrics, the dashboard, admin, OpenAPI,
an unknown path (404), a wrong method (405), a head too large (431), a refused WebSocket — goes
through :class:`RequestLog`: the id is the client's ``X-Request-Id`` (the same rule as the
front-ends: taken as sent, echoed up to 200 characters) or a new one; it is put on the scope
(``glm_request_id``) for the handlers, replaces any ``x-request-id`` the response carries, and
is logged with the status, duration, method and path. Probes and scrapes are logged too (one
buffered write per event-loop turn: cheap), but counted in no metric.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from gateway.edge.asgi import Message, Receive, Scope, Send, header_map, new_request_id
from gateway.edge.asgi import safe_header as _safe
from gateway.edge.client_addr import ClientAddress
from gateway.observability.access import AccessLog

App = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY: Final = "glm_request_id"
"""The scope entry handlers read the request id from."""
SCOPE_KEY_ID: Final = "glm_key_id"
"""A handler that identified the caller puts the key id here (for the line's ``key_id``)."""
SCOPE_ERROR: Final = "glm_error"
"""A handler that answered with an error puts its code here (for the line's ``error``)."""

_API_BY_PREFIX: Final = (
    ("/v1/models", "models"),
    ("/v1/route", "route"),
    ("/v1/messages/count_tokens", "count_tokens"),
    ("/v1/responses", "responses"),
    ("/healthz", "ops"),
    ("/readyz", "ops"),
    ("/metrics", "ops"),
    ("/dashboard", "dashboard"),
    ("/admin", "admin"),
    ("/openapi.json", "openapi"),
)


def api_of(path: str) -> str:
    """The access line's ``api`` for a path no front-end endpoint serves (``other`` if none)."""
    for prefix, api in _API_BY_PREFIX:
        if path.startswith(prefix):
            return api
    return "other"


def scope_request_id(scope: Scope) -> str:
    """The request id :class:`RequestLog` chose (or the client's, or a new one)."""
    rid = scope.get(SCOPE_KEY)
    if isinstance(rid, str):
        return rid
    for name, value in scope.get("headers", ()):
        if name.lower() == b"x-request-id" and value:
            return str(value.decode("latin-1"))
    return new_request_id()


class RequestLog:
    """Wraps an ASGI app (the FastAPI side): an id on every response, a line per request."""

    __slots__ = ("_access", "_client")

    def __init__(self, access: AccessLog, trusted_proxies: Iterable[str]) -> None:
        self._access = access
        self._client = ClientAddress(trusted_proxies)

    async def __call__(self, app: App, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = header_map(scope)
        rid = headers.get("x-request-id") or new_request_id()
        scope[SCOPE_KEY] = rid
        id_header = (b"x-request-id", _safe(rid, 200))
        status = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                kept = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                message["headers"] = [*kept, id_header]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            status[0] = status[0] or 499  # the client went away before an answer
            raise
        finally:
            self.line(scope, headers, rid, status[0] or 500, time.perf_counter() - started)

    def line(
        self, scope: Scope, headers: dict[str, str], rid: str, status: int, duration_s: float
    ) -> None:
        """Write the access line of one request (also for answers sent outside the wrapper)."""
        path = str(scope.get("path", ""))
        error = scope.get(SCOPE_ERROR)
        self._access.note(
            request_id=rid,
            status=status,
            duration_s=duration_s,
            api=api_of(path),
            method=str(scope.get("method", "GET")),
            path=path[:200],
            client=self._client.of(scope, headers),
            key_id=str(scope.get(SCOPE_KEY_ID, "-")),
            error=error if isinstance(error, str) else None,
        )
