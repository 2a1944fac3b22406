"""OpenAI chat completions: the internal request already, so the translation is the identity.

``parse`` checks only what the edge needs before the needs resolver reads the body (``stream``);
answers and streams pass through as the router produced them (model rewritten, dialect
normalised); errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.errors import GatewayError, InvalidRequest
from gateway.frontends.base import (
    JSON_HEADERS,
    SSE_HEADERS,
    Headers,
    Inbound,
    body_session,
    plain_inbound,
)


class _Passthrough:
    __slots__ = ()
    takes_objects = False

    def begin(self) -> bytes:
        return b""

    def relay(self, chunk: bytes) -> bytes:
        return chunk

    def relay_parts(self, parts: list[bytes], objs: list[Any]) -> bytes:
        return b"".join(parts)

    def fail(self, err: GatewayError) -> bytes:
        return b"data: " + err.body_bytes() + b"\n\n"


_PASSTHROUGH: Final = _Passthrough()


class ChatFrontEnd:
    name = "chat"
    stream_headers: Headers = SSE_HEADERS
    renders_objects = False

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Inbound:
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise InvalidRequest("'stream' must be a boolean.", param="stream", code="invalid_type")
        if "prompt_cache_key" in body or "user" in body:
            return plain_inbound(body, stream is True, body_session(body))
        return plain_inbound(body, stream is True, None)  # (body_session's answer, no call)

    def render(
        self, answer: bytes | dict[str, Any], inbound: Inbound, native: bool = False
    ) -> bytes:
        assert isinstance(answer, bytes)  # renders_objects is False: the router encoded it
        return answer

    def stream(self, inbound: Inbound, native: bool = False) -> _Passthrough:
        return _PASSTHROUGH

    def error(self, err: GatewayError, request_id: str) -> tuple[int, bytes, Headers]:
        return err.status, err.body_bytes(), JSON_HEADERS
