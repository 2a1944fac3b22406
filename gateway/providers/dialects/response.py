"""Response normalisation: a host's answer (or one stream chunk) made OpenAI-shaped, in place.

- ``object`` added where the host omits it (Z.ai / BigModel), ``model`` set to the variant id;
- the fields OpenAI's schema requires but GLM hosts leave out (``choices[].logprobs``,
  ``message.refusal``) added as null;
- ``reasoning`` / ``reasoning_details`` (OpenRouter) become ``reasoning_content``;
- GLM-4.5V ``<think>`` / box tags in ``content`` are split out (see :mod:`.tags`);
- ``finish_reason: sensitive`` becomes ``content_filter``;
- tool-call ``arguments`` are always a JSON string, with ``type`` (and in chunks ``index``).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.catalogue.target import Target
from gateway.providers.dialects.spec import TAGGED_CONTENT_VARIANTS
from gateway.providers.dialects.tags import unwrap

FINISH_REASONS = {"sensitive": "content_filter"}
_MESSAGE_FIELDS = frozenset({"reasoning", "reasoning_details", "tool_calls"})
"""What :func:`normalise_message` may change: a message with none of them is left as it is."""


def normalise_response(obj: dict[str, Any], target: Target) -> None:
    """Make a host's chat.completion OpenAI-shaped, in place."""
    variant = obj["model"] = target.variant_id
    obj.setdefault("object", "chat.completion")
    if obj.get("created") is None:
        obj["created"] = 0
    tags = variant in TAGGED_CONTENT_VARIANTS  # (tags_in_content, without the call)
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        choice.setdefault("logprobs", None)
        msg = choice.get("message")
        if isinstance(msg, dict):
            msg.setdefault("refusal", None)
            # (not _MESSAGE_FIELDS.isdisjoint(msg): three lookups cost less than its walk)
            if "tool_calls" in msg or "reasoning" in msg or "reasoning_details" in msg:
                normalise_message(msg, stream=False)
            if tags:
                _unwrap_message(msg)
        fr = choice.get("finish_reason")
        if isinstance(fr, str) and fr in FINISH_REASONS:
            choice["finish_reason"] = FINISH_REASONS[fr]


def normalise_chunk(obj: dict[str, Any], target: Target) -> None:
    """Make a host's stream chunk OpenAI-shaped, in place (tags are the stream's business)."""
    obj["model"] = target.variant_id
    obj.setdefault("object", "chat.completion.chunk")
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict) and not _MESSAGE_FIELDS.isdisjoint(delta):
            normalise_message(delta, stream=True)
        fr = choice.get("finish_reason")
        if isinstance(fr, str) and fr in FINISH_REASONS:
            choice["finish_reason"] = FINISH_REASONS[fr]


def normalise_message(msg: dict[str, Any], *, stream: bool) -> None:
    """Reasoning field name and tool-call shape of one message or delta."""
    if "reasoning" in msg:
        reasoning = msg.pop("reasoning")
        if isinstance(reasoning, str) and "reasoning_content" not in msg:
            msg["reasoning_content"] = reasoning
    msg.pop("reasoning_details", None)
    calls = msg.get("tool_calls")
    if not isinstance(calls, list):
        return
    for i, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        fn = call.get("function")
        if isinstance(fn, dict) and "arguments" in fn and not isinstance(fn["arguments"], str):
            fn["arguments"] = orjson.dumps(fn["arguments"] or {}).decode()
        if stream:
            call.setdefault("index", i)
        if not stream or "id" in call:
            call.setdefault("type", "function")


def _unwrap_message(msg: dict[str, Any]) -> None:
    content = msg.get("content")
    if not isinstance(content, str):
        return
    reasoning, answer = unwrap(content)
    msg["content"] = answer
    if reasoning:
        before = msg.get("reasoning_content")
        msg["reasoning_content"] = (before if isinstance(before, str) else "") + reasoning
