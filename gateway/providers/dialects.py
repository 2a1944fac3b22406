"""Host dialects: how a provider's surface differs from OpenAI's, declared as data.

``adapt_request`` turns the client's body into what the target host accepts and names every
change it made (reported in ``X-GLM-Adapted``). ``normalise_response`` / ``normalise_chunk``
turn the host's answer back into OpenAI's shape. A dialect whose chunks are already OpenAI
chunks is relayed byte for byte (``raw_chunks``); only ``model`` is rewritten.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.catalogue.catalogue import Target

_SCHEMA_PROMPT = (
    "Respond only with a JSON object that validates against this JSON schema "
    "(no prose, no code fences). JSON schema:\n```json\n{schema}\n```"
)


@dataclass(frozen=True, slots=True)
class DialectSpec:
    name: str
    raw_chunks: bool
    """Stream chunks need no change but ``model`` (relayed as bytes)."""
    adds_object: bool = False
    temperature_max: float | None = None
    top_p_min: float | None = None
    stop_max: int | None = None
    tool_choice_auto_only: bool = False
    native_json_schema: bool = True
    max_tokens_field_only: bool = False
    drop_fields: tuple[str, ...] = ()
    user_field: str | None = None
    request_id: bool = False
    reasoning_field: str = "reasoning_content"


DIALECTS: dict[str, DialectSpec] = {
    "openai": DialectSpec("openai", raw_chunks=True),
    "vllm": DialectSpec("vllm", raw_chunks=True),
    "siliconflow": DialectSpec("siliconflow", raw_chunks=True),
    "openrouter": DialectSpec("openrouter", raw_chunks=False, reasoning_field="reasoning"),
    "zhipu": DialectSpec(
        "zhipu",
        raw_chunks=False,
        adds_object=True,
        temperature_max=1.0,
        top_p_min=0.01,
        stop_max=1,
        tool_choice_auto_only=True,
        native_json_schema=False,
        max_tokens_field_only=True,
        drop_fields=(
            "n",
            "logprobs",
            "top_logprobs",
            "seed",
            "frequency_penalty",
            "presence_penalty",
            "logit_bias",
            "parallel_tool_calls",
            "stream_options",
        ),
        user_field="user_id",
        request_id=True,
    ),
}


def adapt_request(body: dict[str, Any], target: Target) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``body`` fit for ``target``, and the list of changes made (``field=what``)."""
    spec = DIALECTS[target.dialect]
    out = dict(body)
    out["model"] = target.model
    out.pop("route", None)
    changes: list[str] = []
    if spec is DIALECTS["openai"] or spec is DIALECTS["vllm"]:
        return out, changes
    _clamp(out, spec, changes)
    _tools_and_format(out, spec, changes)
    for key in spec.drop_fields:
        if key in out:
            del out[key]
            changes.append(f"{key}=dropped")
    if spec.user_field and "user" in out:
        user = out.pop("user")
        if isinstance(user, str) and 6 <= len(user) <= 128:
            out[spec.user_field] = user
            changes.append(f"user={spec.user_field}")
        else:
            changes.append("user=dropped")
    if spec.request_id:
        out["request_id"] = uuid.uuid4().hex
    return out, changes


def _clamp(out: dict[str, Any], spec: DialectSpec, changes: list[str]) -> None:
    t = out.get("temperature")
    if (
        spec.temperature_max is not None
        and isinstance(t, (int, float))
        and t > spec.temperature_max
    ):
        out["temperature"] = spec.temperature_max
        changes.append("temperature=clamped")
    p = out.get("top_p")
    if spec.top_p_min is not None and isinstance(p, (int, float)) and p < spec.top_p_min:
        out["top_p"] = spec.top_p_min
        changes.append("top_p=clamped")
    stop = out.get("stop")
    if spec.stop_max is not None and isinstance(stop, list) and len(stop) > spec.stop_max:
        out["stop"] = stop[: spec.stop_max]
        changes.append("stop=truncated")
    if spec.max_tokens_field_only and "max_completion_tokens" in out:
        mct = out.pop("max_completion_tokens")
        out.setdefault("max_tokens", mct)
        changes.append("max_completion_tokens=max_tokens")


def _tools_and_format(out: dict[str, Any], spec: DialectSpec, changes: list[str]) -> None:
    tc = out.get("tool_choice")
    if spec.tool_choice_auto_only and tc is not None and tc != "auto":
        if tc == "none":
            out.pop("tools", None)
            changes.append("tools=dropped_for_tool_choice_none")
        out.pop("tool_choice")
        changes.append("tool_choice=auto")
    rf = out.get("response_format")
    if not spec.native_json_schema and isinstance(rf, dict) and rf.get("type") == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema", {})
        out["response_format"] = {"type": "json_object"}
        prompt = _SCHEMA_PROMPT.format(schema=orjson.dumps(schema).decode())
        out["messages"] = [{"role": "system", "content": prompt}, *out["messages"]]
        changes.append("response_format=json_object+schema_prompt")


def normalise_response(obj: dict[str, Any], target: Target) -> None:
    """Make a host's chat.completion OpenAI-shaped, in place."""
    obj["model"] = target.variant.id
    obj.setdefault("object", "chat.completion")
    if obj.get("created") is None:
        obj["created"] = 0
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        _normalise_message(choice.get("message"), target)
        if choice.get("finish_reason") == "sensitive":
            choice["finish_reason"] = "content_filter"


def normalise_chunk(obj: dict[str, Any], target: Target) -> None:
    """Make a host's stream chunk OpenAI-shaped, in place."""
    obj["model"] = target.variant.id
    obj.setdefault("object", "chat.completion.chunk")
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        _normalise_message(choice.get("delta"), target)
        if choice.get("finish_reason") == "sensitive":
            choice["finish_reason"] = "content_filter"


def _normalise_message(msg: Any, target: Target) -> None:
    if not isinstance(msg, dict):
        return
    if "reasoning" in msg and "reasoning_content" not in msg:
        msg["reasoning_content"] = msg.pop("reasoning")
        msg.pop("reasoning_details", None)
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and not isinstance(fn.get("arguments"), str):
            fn["arguments"] = orjson.dumps(fn.get("arguments") or {}).decode()
        if isinstance(call, dict):
            call.setdefault("type", "function")


def model_rewriter(target: Target) -> tuple[tuple[bytes, bytes], ...]:
    """Byte replacements that put the variant id in place of the host's model id."""
    if target.model == target.variant.id:
        return ()
    up = orjson.dumps(target.model)
    ours = orjson.dumps(target.variant.id)
    return ((b'"model":' + up, b'"model":' + ours), (b'"model": ' + up, b'"model": ' + ours))
