"""A normalised OpenAI chat completion as an Anthropic ``Message``; the mappings the stream
translator shares (stop reason, usage, tool input).

Stop reason: ``length`` → ``max_tokens``; ``content_filter`` → ``refusal``; otherwise
``tool_use`` whenever the answer holds a tool call (also when the host said ``stop``: an agent
must run the tool); otherwise ``stop_sequence`` when the host names the matched sequence
(vLLM's ``stop_reason``, SGLang's ``matched_stop``) or the text still ends with one of the
request's sequences, with that sequence in ``stop_sequence``; otherwise ``end_turn``.

Usage: Anthropic's ``input_tokens`` excludes cache reads, so it is ``prompt_tokens`` minus
``prompt_tokens_details.cached_tokens``, which becomes ``cache_read_input_tokens``.

Tool input: the arguments JSON when it is an object; ``""`` → ``{}``; anything else (malformed
JSON, an array, a string) → ``{"_raw": "<the arguments as sent>"}``: the client's schema check
then fails loudly with the model's own output in view, instead of a tool run with ``{}``.
"""

from __future__ import annotations

from os import urandom
from typing import Any

import orjson

from gateway.frontends.messages_ids import tool_use_id
from gateway.frontends.messages_signature import sign_thinking


def message_id() -> str:
    """A fresh ``msg_`` id: 24 hex digits of ``os.urandom``, as ``secrets.token_hex(12)``
    makes them, without its three Python calls."""
    return "msg_" + urandom(12).hex()


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON string) as the ``tool_use`` block's ``input``."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"_raw": arguments}


def matched_stop(choice: dict[str, Any], text: str, stops: list[str] | None) -> str | None:
    """The stop sequence the answer ended at, when the host says or the text shows it."""
    if not stops:
        return None
    for key in ("stop_reason", "matched_stop"):
        said = choice.get(key)
        if isinstance(said, str) and said in stops:
            return said
    return next((s for s in stops if s and text.endswith(s)), None)


def stop_reason(finish: Any, *, tool_use: bool, sequence: str | None) -> str:
    """Anthropic's ``stop_reason`` for an OpenAI ``finish_reason`` (see the module doc)."""
    if finish == "length":
        return "max_tokens"
    if finish == "content_filter":
        return "refusal"
    if tool_use:
        return "tool_use"
    return "stop_sequence" if sequence is not None else "end_turn"


def usage(raw: Any, input_estimate: int = 0) -> dict[str, Any]:
    """Anthropic's ``Usage`` from an OpenAI usage object (``input_estimate`` when absent)."""
    u = raw if isinstance(raw, dict) else {}
    prompt = u.get("prompt_tokens")
    if type(prompt) is not int or prompt < 0:  # the usual plain count passes at once
        prompt = _count(prompt)
    details = u.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    inputs = input_estimate if prompt is None else max(prompt - (cached or 0), 0)
    output = u.get("completion_tokens")
    if type(output) is not int or output < 0:
        output = _count(output)
    return {
        "input_tokens": inputs,
        "output_tokens": output or 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached or 0,
        "cache_creation": None,
        "inference_geo": None,
        "output_tokens_details": None,
        "server_tool_use": None,
        "service_tier": None,
    }


def _count(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else None


def tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI tool call as a ``tool_use`` block."""
    fn = call.get("function")
    fn = fn if isinstance(fn, dict) else {}
    name = fn.get("name")
    cid = call.get("id")
    return {
        "type": "tool_use",
        "id": tool_use_id(cid if isinstance(cid, str) else None),
        "name": name if isinstance(name, str) and name else "unknown",
        "input": tool_input(fn.get("arguments")),
        "caller": {"type": "direct"},
    }


def from_chat(
    answer: dict[str, Any],
    requested_model: str,
    *,
    stop_sequences: list[str] | None,
    thinking_key: bytes,
) -> dict[str, Any]:
    """The Anthropic ``Message`` for a normalised chat completion (first choice).

    ``requested_model`` is echoed as ``model``; reasoning becomes a ``thinking`` block signed
    with ``thinking_key`` so a replay is accepted. Never raises on odd shapes.
    """
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    text = msg.get("content")
    text = text if isinstance(text, str) else ""
    if msg.get("tool_calls") is None and not msg.get("reasoning_content"):  # text only
        blocks = [{"type": "text", "text": text, "citations": None}] if text else []
        tool_use = False
    else:
        blocks = _blocks(msg, text, thinking_key)
        tool_use = any(b["type"] == "tool_use" for b in blocks)
    sequence = (
        None if tool_use or not stop_sequences else matched_stop(choice, text, stop_sequences)
    )
    reason = stop_reason(choice.get("finish_reason"), tool_use=tool_use, sequence=sequence)
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": blocks,
        "stop_reason": reason,
        "stop_sequence": sequence if reason == "stop_sequence" else None,
        "stop_details": None,
        "container": None,
        "usage": usage(answer.get("usage")),
    }


def _blocks(msg: dict[str, Any], text: str, key: bytes) -> list[dict[str, Any]]:
    """Thinking (signed), text, then tool calls: the order the host produced them in."""
    blocks: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        signature = sign_thinking(reasoning, key)
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": signature})
    if text:
        blocks.append({"type": "text", "text": text, "citations": None})
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        blocks += [tool_use_block(c) for c in calls if isinstance(c, dict)]
    return blocks
