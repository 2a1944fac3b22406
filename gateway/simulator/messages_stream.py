"""The native Messages surface on the wire: a decided :class:`~.behaviour.Answer` as Anthropic's
``Message`` body or as its SSE events, and errors in Anthropic's shape.

The stream is cut into the same three parts as a chat stream (:class:`~.behaviour.StreamPlan`)
so every fault applies unchanged: ``head`` is ``message_start``, ``ping``, the whole ``thinking``
block and the start of the text or ``tool_use`` block; ``body`` the ``text_delta`` or
``input_json_delta`` events (the "content chunks" a ``cut_after_chunks`` counts); ``tail`` the
block's stop, ``message_delta`` and ``message_stop``; ``error`` an ``event: error``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.simulator.behaviour import Answer, StreamPlan, split_pieces
from gateway.simulator.dialects import ErrorReply

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's error type per HTTP status; any other status is ``api_error``."""
KNOWN_TYPES = frozenset({*ERROR_TYPES.values(), "api_error"})
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "sensitive": "refusal",
    "content_filter": "refusal",
}
"""A chat ``finish_reason`` (also a rule's) as a ``stop_reason``; other values pass as given."""
JSON_PIECE_CHARS = 12
BROKEN_EVENT = (
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
    b'"delta": {"type": "text_delta", "text": "unfin'
)


def error_body(etype: str, message: str, code: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"[, "code"]}, "request_id": null}``."""
    err: dict[str, Any] = {"type": etype, "message": message}
    if code is not None and code != etype:
        err["code"] = code
    return {"type": "error", "error": err, "request_id": None}


def anthropic_error(status: int, message: str, code: str | None = None) -> ErrorReply:
    """An error answer in Anthropic's shape, its type chosen by ``status`` (or by ``code``
    when that is an Anthropic error type such as ``overloaded_error``)."""
    etype = code if code in KNOWN_TYPES else ERROR_TYPES.get(status, "api_error")
    return ErrorReply(status, error_body(str(etype), message, code))


def fault_error(status: int, code: str | None, message: str | None) -> ErrorReply:
    """The error a fault rule asks for (``status``, ``code``, ``message``) on this surface."""
    return anthropic_error(status, message or f"Simulated upstream error (HTTP {status})", code)


def usage(input_tokens: int, output_tokens: int, cached: int = 0) -> dict[str, Any]:
    """The ``Usage`` object: counts (``input_tokens`` without the ``cached`` read from the
    prompt cache, as Anthropic counts), every other field null."""
    return {
        "input_tokens": input_tokens - cached,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "cache_creation": None,
        "inference_geo": None,
        "output_tokens_details": None,
        "server_tool_use": None,
        "service_tier": None,
    }


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer in Messages terms: blocks, stop reason and sequence, token counts."""

    id: str
    model: str
    blocks: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    """Of ``input_tokens``, read from the prompt cache."""


def build_reply(answer: Answer, uid: str, model: str, stops: list[str]) -> Reply:
    """Thinking (signed), text cut at the first requested stop sequence, or a ``tool_use``."""
    blocks: list[dict[str, Any]] = []
    if answer.reasoning:
        blocks.append({"type": "thinking", "thinking": answer.reasoning, "signature": ""})
        blocks[-1]["signature"] = sign(answer.reasoning)
    sequence = None
    call = answer.tool_call
    if call is None:
        text, sequence = cut_at_stop(answer.content or "", stops)
        blocks.append({"type": "text", "text": text, "citations": None})
    else:
        fn = call["function"]
        args = fn["arguments"]
        tool_input = orjson.loads(args) if isinstance(args, str) else args
        block = {"type": "tool_use", "id": f"toolu_{uid}", "name": fn["name"], "input": tool_input}
        blocks.append({**block, "caller": {"type": "direct"}})
    reason = "stop_sequence" if sequence is not None else answer.finish_reason
    reason = STOP_REASONS.get(reason, reason)
    used = answer.completion_tokens
    return Reply(
        f"msg_{uid}",
        model,
        blocks,
        reason,
        sequence,
        answer.prompt_tokens,
        used,
        answer.cached_tokens,
    )


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """``text`` up to the earliest requested stop sequence in it, and that sequence."""
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if not hits:
        return text, None
    at, seq = min(hits)
    return text[:at], seq


def sign(thinking: str) -> str:
    """A stable opaque signature for a thinking block."""
    digest = hashlib.sha256(b"glm-sim-thinking\0" + thinking.encode()).digest()
    return base64.b64encode(digest).decode()


def message_body(reply: Reply) -> dict[str, Any]:
    """The non-streaming ``Message``."""
    return {
        **_message_top(reply),
        "content": reply.blocks,
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": usage(reply.input_tokens, reply.output_tokens, reply.cached_tokens),
    }


def _message_top(reply: Reply) -> dict[str, Any]:
    return {
        "id": reply.id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "container": None,
    }


def event(name: str, data: dict[str, Any]) -> bytes:
    """One SSE event: ``event: NAME`` and its JSON ``data`` (whose ``type`` is ``NAME``)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def stream_plan(reply: Reply, stream_error: Any = None) -> StreamPlan:
    """The events of ``reply``, in the three parts faults cut between (module docstring)."""
    start = {**_message_top(reply), "usage": usage(reply.input_tokens, 1, reply.cached_tokens)}
    head = [
        event("message_start", {"type": "message_start", "message": start}),
        event("ping", {"type": "ping"}),
    ]
    index = 0
    for block in reply.blocks[:-1]:  # only ever a thinking block
        head += _thinking_events(index, block)
        index += 1
    last = reply.blocks[-1]
    head.append(_block_start(index, last))
    if last["type"] == "tool_use":
        raw = orjson.dumps(last["input"]).decode()
        pieces = [raw[i : i + JSON_PIECE_CHARS] for i in range(0, len(raw), JSON_PIECE_CHARS)]
        body = [_delta(index, {"type": "input_json_delta", "partial_json": p}) for p in pieces]
    else:
        body = [
            _delta(index, {"type": "text_delta", "text": p}) for p in split_pieces(last["text"])
        ]
    tail = [
        event("content_block_stop", {"type": "content_block_stop", "index": index}),
        event("message_delta", _message_delta(reply)),
        event("message_stop", {"type": "message_stop"}),
    ]
    error = [] if stream_error is None else [error_event(stream_error)]
    return StreamPlan(head, body, tail, error)


def error_event(spec: Any) -> bytes:
    """A ``stream_error`` fault ({code, message}) as an ``event: error``; the type is ``code``
    when that names an Anthropic error type (else ``api_error``)."""
    spec = spec if isinstance(spec, dict) else {}
    code = spec.get("code")
    code = None if code is None else str(code)
    message = str(spec.get("message") or "Simulated stream error")
    etype = code if code in KNOWN_TYPES else "api_error"
    return event("error", error_body(str(etype), message, code))


def _thinking_events(index: int, block: dict[str, Any]) -> list[bytes]:
    out = [_block_start(index, block)]
    out += [
        _delta(index, {"type": "thinking_delta", "thinking": p})
        for p in split_pieces(block["thinking"])
    ]
    out.append(_delta(index, {"type": "signature_delta", "signature": block["signature"]}))
    out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    if block["type"] == "thinking":
        empty: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
    elif block["type"] == "tool_use":
        empty = {**block, "input": {}}
    else:
        empty = {"type": "text", "text": "", "citations": None}
    data = {"type": "content_block_start", "index": index, "content_block": empty}
    return event("content_block_start", data)


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    data = {"type": "content_block_delta", "index": index, "delta": delta}
    return event("content_block_delta", data)


def _message_delta(reply: Reply) -> dict[str, Any]:
    delta = {
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "stop_details": None,
        "container": None,
    }
    counts = {
        "input_tokens": reply.input_tokens - reply.cached_tokens,
        "output_tokens": reply.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": reply.cached_tokens,
        "output_tokens_details": None,
        "server_tool_use": None,
    }
    return {"type": "message_delta", "delta": delta, "usage": counts}
