"""What the GenAI semantic conventions read of a chat request and its answer (plain values).

Used by :mod:`gateway.observability.otel` when traces are on; nothing here imports
OpenTelemetry. Usage is the OpenAI shape the router normalises every answer to; message
content follows the conventions' ``gen_ai.input.messages`` / ``gen_ai.output.messages`` JSON
(role and parts), and is read only when content capture is configured.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

_FINISH = re.compile(rb'"(?:finish_reason|stop_reason)"\s*:\s*"([A-Za-z0-9_.-]{1,40})"')


def usage_attributes(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """``gen_ai.usage.*`` from an OpenAI ``usage`` object (counts that are ints only)."""
    if not usage:
        return {}
    out: dict[str, int] = {}
    for field, name in (
        ("prompt_tokens", "gen_ai.usage.input_tokens"),
        ("completion_tokens", "gen_ai.usage.output_tokens"),
    ):
        value = usage.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
    for field, inner, name in (
        ("prompt_tokens_details", "cached_tokens", "gen_ai.usage.cache_read.input_tokens"),
        ("completion_tokens_details", "reasoning_tokens", "gen_ai.usage.reasoning.output_tokens"),
    ):
        details = usage.get(field)
        value = details.get(inner) if isinstance(details, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value:
            out[name] = value
    return out


def answer_finish_reasons(answer: Any) -> list[str]:
    """The finish reasons of a non-streamed answer: an OpenAI object, or its bytes (OpenAI's
    ``finish_reason`` or, from a host that answered natively, Anthropic's ``stop_reason``)."""
    if isinstance(answer, dict):
        choices = answer.get("choices")
        if isinstance(choices, list):
            return [
                c["finish_reason"]
                for c in choices
                if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)
            ]
        reason = answer.get("stop_reason")
        return [reason] if isinstance(reason, str) else []
    if isinstance(answer, bytes | bytearray):
        return list(dict.fromkeys(m.decode() for m in _FINISH.findall(answer)))
    return []


def input_messages(chat: Mapping[str, Any]) -> str:
    """``gen_ai.input.messages``: the chat request's messages as role + parts JSON."""
    messages = chat.get("messages")
    if not isinstance(messages, list):
        return "[]"
    return orjson.dumps([_message(m) for m in messages if isinstance(m, dict)]).decode()


def output_messages(answer: Any) -> str | None:
    """``gen_ai.output.messages`` of a non-streamed OpenAI answer (object or bytes)."""
    if isinstance(answer, bytes | bytearray):
        try:
            answer = orjson.loads(answer)
        except orjson.JSONDecodeError:
            return None
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list):
        return None
    out = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            msg = _message(message)
            msg["finish_reason"] = choice.get("finish_reason")
            out.append(msg)
    return orjson.dumps(out).decode()


def _message(m: Mapping[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    content = m.get("content")
    if isinstance(content, str):
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                parts.append({"type": "text", "content": part.get("text")})
            else:
                parts.append({"type": str(part.get("type"))})
    reasoning = m.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    for call in m.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            name, arguments = fn.get("name"), fn.get("arguments")
            parts.append(
                {"type": "tool_call", "id": call.get("id"), "name": name, "arguments": arguments}
            )
    if m.get("role") == "tool":
        parts = [{"type": "tool_call_response", "id": m.get("tool_call_id"), "response": content}]
    return {"role": m.get("role"), "parts": parts}
