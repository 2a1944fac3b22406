"""Checks for what the Messages front-end sends: every body and event parsed with the
``anthropic`` SDK's own types and validated against Anthropic's OpenAPI schemas, and every
event sequence held to the order clients rely on."""

from __future__ import annotations

from typing import Any

import orjson
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from tests.support.openapi import ANTHROPIC

_EVENT = TypeAdapter(RawMessageStreamEvent)


def check_message(body: dict[str, Any]) -> Message:
    """``body`` meets the spec's ``Message`` and parses as the SDK's ``Message``."""
    ANTHROPIC.validate("Message", body)
    return Message.model_validate(body)


def check_error(body: dict[str, Any]) -> ErrorResponse:
    """``body`` meets the spec's ``ErrorResponse`` and parses as the SDK's."""
    ANTHROPIC.validate("ErrorResponse", body)
    return ErrorResponse.model_validate(body)


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` for each SSE event; the name must equal ``data.type``."""
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        lines = frame.split("\n")
        assert len(lines) == 2, frame
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        name, data = lines[0][7:], orjson.loads(lines[1][6:])
        assert data["type"] == name
        out.append((name, data))
    assert raw.endswith(b"\n\n") or not raw
    return out


def check_stream(raw: bytes) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    """Validate every event (SDK + spec), the event order and block discipline; return the
    events and the SDK accumulator's final message (None when the stream ended in an error)."""
    events = parse_sse(raw)
    snapshot: Any = None
    bufs: dict[int, bytes] = {}
    open_block: tuple[int, str] | None = None
    next_index = 0
    names = [n for n, _ in events if n != "ping"]
    assert names[0] == "message_start" and names.count("message_start") == 1, names
    for name, data in events:
        if name == "ping":
            continue
        if name == "error":
            check_error(data)
            assert (name, data) == events[-1], "nothing may follow an error event"
            return events, None
        ANTHROPIC.validate("MessageStreamEvent", data)
        _EVENT.validate_python(data)
        if name == "content_block_start":
            assert open_block is None and data["index"] == next_index
            open_block = (data["index"], data["content_block"]["type"])
            next_index += 1
        elif name == "content_block_delta":
            assert open_block is not None and data["index"] == open_block[0]
            assert _DELTA_FOR[data["delta"]["type"]] == open_block[1], (data, open_block)
        elif name == "content_block_stop":
            assert open_block is not None and data["index"] == open_block[0]
            open_block = None
        elif name in ("message_delta", "message_stop"):
            assert open_block is None
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)  # type: ignore[arg-type]
    assert names[-2:] == ["message_delta", "message_stop"], names
    check_message(snapshot.to_dict())
    return events, snapshot


_DELTA_FOR = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "signature_delta": "thinking",
    "input_json_delta": "tool_use",
}
