"""Small raw-ASGI helpers shared by the hot path (no framework objects per request)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from gateway.errors import BodyTooLarge, GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_CT = (b"content-type", b"application/json")


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers by name (the last of a repeated one). A loop, not a dict
    comprehension: on Python 3.11 that is a function of its own to make and call."""
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        out[k.decode("latin-1")] = v.decode("latin-1")
    return out


_PLAIN_VALUES: Final = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "accept",
        "accept-encoding",
        "connection",
        "user-agent",
        "anthropic-version",
        "x-stainless-arch",
        "x-stainless-lang",
        "x-stainless-os",
        "x-stainless-package-version",
        "x-stainless-runtime",
        "x-stainless-runtime-version",
        "x-stainless-retry-count",
        "x-stainless-async",
        "x-stainless-read-timeout",
    }
)
"""Headers whose decoded values :class:`HeaderReader` keeps: sent alike by a client on every
request, and never a secret (no key, cookie or id is kept)."""


class HeaderReader:
    """:func:`header_map` that keeps what it decoded (a ``bytes.decode`` call costs ~800
    instructions): every header name, and the values of :data:`_PLAIN_VALUES`, each up to a
    bound (past it, decoded each time). The same dict as :func:`header_map`'s."""

    __slots__ = ("_names", "_names_max", "_values", "_values_max")

    def __init__(self, names_max: int = 512, values_max: int = 2048) -> None:
        self._names: dict[bytes, str] = {}
        self._values: dict[bytes, str] = {}
        self._names_max = names_max
        self._values_max = values_max

    def read(self, scope: Scope) -> dict[str, str]:
        out: dict[str, str] = {}
        names, values = self._names, self._values
        for k, v in scope["headers"]:
            name = names.get(k)
            if name is None:
                name = k.decode("latin-1")
                if len(names) < self._names_max:
                    names[k] = name
            if name in _PLAIN_VALUES:
                value = values.get(v)
                if value is None:
                    value = v.decode("latin-1")
                    if len(values) < self._values_max:
                        values[v] = value
                out[name] = value
            else:
                out[name] = v.decode("latin-1")
        return out


async def read_body(receive: Receive, limit: int, first: Message | None = None) -> bytes:
    """The whole request body; BodyTooLarge past ``limit`` bytes. ``first``: its first
    message, when the caller received it already."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = first if first is not None else await receive()
        first = None
        if msg["type"] == "http.disconnect":
            raise asyncio.CancelledError("client went away while sending the body")
        part: bytes = msg.get("body", b"")
        if part:
            size += len(part)
            if size > limit:
                raise body_too_large(limit)
            if not chunks and not msg.get("more_body", False):
                return part  # the whole body in one message (the usual case): no list
            chunks.append(part)
        if not msg.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def body_too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"Request body is larger than the {limit} bytes this gateway accepts.")


def safe_header(value: str, limit: int = 1000) -> bytes:
    """A header value that is latin-1 safe and bounded."""
    return value[:limit].encode("latin-1", "replace")


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON_CT, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, err: GatewayError, headers: list[tuple[bytes, bytes]]) -> None:
    extra = [(k.lower().encode(), safe_header(v)) for k, v in err.headers.items()]
    await send_json(send, err.status, err.body_bytes(), headers + extra)
