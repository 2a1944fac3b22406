"""What an upstream's 2xx really is: an answer, or a failure dressed as one.

Hosts answer 200 with things that are not answers: invalid JSON, a body with no ``choices``, an
error object (GLM sends ``{"error": {"code": "1302", ...}}`` with 200 on some paths), or, to a
stream request, a JSON or HTML body instead of server-sent events. Each becomes a
:class:`~gateway.routing.failures.Failure` classified like the same error with an error status,
so a GLM 1302 in a 200 is still a rate limit (with its cooldown), not a blind retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.providers.base import UpstreamConnectionError, UpstreamResponse, UpstreamTimeout
from gateway.routing import failures as fl

MAX_NOT_A_STREAM_BYTES = 65_536
"""How much of a non-SSE answer to a stream request is read to classify it."""


def parse_answer(raw: bytes, headers: Mapping[str, str]) -> dict[str, Any] | fl.Failure:
    """A 2xx non-streaming body: the answer object, or the failure it really is."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return fl.Failure(fl.FailureClass.TRANSIENT, 200, None, "upstream sent invalid JSON")
    if isinstance(obj, dict) and isinstance(obj.get("choices"), list):
        return obj
    if isinstance(obj, dict) and "error" in obj:
        return fl.classify_response(200, headers, raw)
    return fl.Failure(fl.FailureClass.TRANSIENT, 200, None, "upstream answer has no choices")


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """Does a 2xx answer to a stream request say it is SSE? (No content type: trust it.)"""
    ctype = headers.get("Content-Type") or headers.get("content-type")
    return not ctype or "event-stream" in ctype.lower()


async def not_a_stream(resp: UpstreamResponse, within_s: float) -> fl.Failure:
    """Classify a 2xx answer to a stream request that is not SSE (read at most 64 KiB)."""
    body = b""
    try:
        async with asyncio.timeout(max(within_s, 0.0)):
            assert resp.chunks is not None
            async for data in resp.chunks:
                body += data
                if len(body) >= MAX_NOT_A_STREAM_BYTES:
                    break
    except (TimeoutError, UpstreamTimeout, UpstreamConnectionError):
        pass
    finally:
        await resp.close()
    ctype = resp.headers.get("Content-Type") or resp.headers.get("content-type") or "?"
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and "error" in obj:
        return fl.classify_response(resp.status, resp.headers, body)
    return fl.Failure(
        fl.FailureClass.TRANSIENT,
        resp.status,
        None,
        f"upstream answered a stream request with {ctype[:60]}, not server-sent events",
    )
