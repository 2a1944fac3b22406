"""Request adaptation: the client's body made fit for one deployment, every change named.

The client's body is never mutated (it is adapted afresh for every attempt); nested objects are
copied only where they change. Each change is one ``field=what`` entry, reported in the
``X-GLM-Adapted`` header and the access log.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.catalogue.target import Target
from gateway.providers.dialects.fields import FORWARDED, forwardable
from gateway.providers.dialects.spec import DIALECTS, NO_OP_VALUES, DialectSpec
from gateway.providers.dialects.thinking import SWITCH_FIELDS, apply_switch

_ATTEMPT_PREFIX = os.urandom(8).hex()
_attempts = itertools.count(1 + 2**64)
"""Attempt ids for hosts that want a unique ``request_id`` per call (a reused one is Zhipu's
error 1231): 16 hex digits random per process, then 16 of a counter (32 hex digits, as a
random id would be), so no syscall per attempt. The counter runs from 2**64 + 1 so that
``hex(n)[3:]`` is its 16 digits, zero-padded (a format spec costs ~5x the slice)."""

SCHEMA_PROMPT = (
    "Respond only with a JSON object that validates against this JSON schema "
    "(no prose, no code fences). JSON schema:\n```json\n{schema}\n```"
)


def adapt_request(
    body: dict[str, Any], target: Target, content_parts: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``body`` fit for ``target``, and the list of changes made (``field=what``).

    Only allowlisted fields survive (:mod:`.fields`): ``route`` and anything unknown are gone.
    ``content_parts=False``: no message's content is a list (the needs' walk saw none), so no
    image part is looked for.
    """
    spec = DIALECTS[target.dialect]
    rules = _RULES.get(spec.name)
    if rules is None or rules.spec is not spec:
        rules = _rules(spec)
    if rules.quiet.issuperset(body) and not (content_parts and spec.drop_image_detail):
        # The usual body: no field a rule or the switch reads but ``max_tokens``, whose rule
        # then only caps it. What the general path below makes of it, in fewer steps.
        out = body.copy()
        out["model"] = target.model
        changes: list[str] = []
        if rules.caps:
            cap, mt = target.max_output, out.get("max_tokens")
            if cap is not None and isinstance(mt, int) and mt > cap:
                out["max_tokens"] = cap
                changes.append("max_tokens=capped")
    else:
        out, changes = _adapted(body, target, spec, content_parts)
    if out.get("stream") is True:
        _stream_options(out, spec)
    if spec.request_id:
        out["request_id"] = _ATTEMPT_PREFIX + hex(next(_attempts))[3:]
    return out, changes


def _adapted(
    body: dict[str, Any], target: Target, spec: DialectSpec, parts: bool
) -> tuple[dict[str, Any], list[str]]:
    """:func:`adapt_request`'s general path, for any body (but the stream and id steps)."""
    out, dropped = forwardable(body)
    out["model"] = target.model
    changes = [dropped] if dropped else []
    if spec.rewrites_fields:
        _fields(out, spec, target, changes, parts)
    if not SWITCH_FIELDS.isdisjoint(out):  # the usual body sets no switch: no call
        apply_switch(out, spec.thinking_form, target.variant.thinking, changes)
    return out, changes


_SAMPLING = frozenset({"temperature", "top_p", "stop"})
_MAX_TOKENS = frozenset({"max_tokens", "max_completion_tokens"})
_TOOLS = frozenset({"tool_choice", "tools"})
# One bit per field rule: which rules a top-level field is read by.
_SAMPLING_RULE, _MAX_TOKENS_RULE, _TOOLS_RULE, _FORMAT_RULE, _USER_RULE, _DROP_RULE = (
    1, 2, 4, 8, 16, 32
)  # fmt: skip


@dataclass(frozen=True, slots=True)  # (a NamedTuple's fields are slower reads)
class _Rules:
    spec: DialectSpec
    bits: dict[str, int]
    """Field -> the rules that read it (a field not here is read by none: when a body has no
    such field, every rule but the image one is skipped, not run to no effect)."""
    drops: frozenset[str]
    quiet: frozenset[str]
    """The fields that need nothing but copying (and ``max_tokens`` when its rule only caps
    it): a body of these alone takes :func:`adapt_request`'s short path."""
    caps: bool
    """That short path caps ``max_tokens``."""


def _rules(spec: DialectSpec) -> _Rules:
    bits = dict.fromkeys(spec.drop_fields, _DROP_RULE)
    for fields, rule in (
        (_SAMPLING, _SAMPLING_RULE),
        (_MAX_TOKENS, _MAX_TOKENS_RULE),
        (_TOOLS, _TOOLS_RULE),
        (("response_format",), _FORMAT_RULE),
        (("user",), _USER_RULE),
    ):
        for name in fields:
            bits[name] = bits.get(name, 0) | rule
    read = set(bits) if spec.rewrites_fields else set()
    if bits.get("max_tokens") == _MAX_TOKENS_RULE:  # with no max_completion_tokens beside it,
        read.discard("max_tokens")  # its rule is the cap alone
    quiet = FORWARDED - read - SWITCH_FIELDS
    caps = spec.rewrites_fields and spec.cap_max_tokens
    return _Rules(spec, bits, frozenset(spec.drop_fields), quiet, caps)


_RULES = {name: _rules(spec) for name, spec in DIALECTS.items()}


def _fields(
    out: dict[str, Any], spec: DialectSpec, target: Target, changes: list[str], parts: bool
) -> None:
    rules = _RULES.get(spec.name)
    if rules is None or rules.spec is not spec:
        rules = _rules(spec)
    # The rules a body needs, from its fields as they came (a loop over its few keys costs a
    # fraction of a set built or tested per rule).
    bits, need = rules.bits, 0
    for key in out:
        need |= bits.get(key, 0)
    if need:
        if need & _SAMPLING_RULE:
            _sampling(out, spec, changes)
        if need & _MAX_TOKENS_RULE:
            _max_tokens(out, spec, target, changes)
        if need & _TOOLS_RULE:
            _tools(out, spec, changes)
        if need & _FORMAT_RULE:
            _response_format(out, spec, changes)
    if parts and spec.drop_image_detail:
        _drop_image_detail(out, changes)
    if need:
        if not rules.drops.isdisjoint(out):  # (as the body is now: a rule above may add one)
            _drop_fields(out, spec, changes)
        if need & _USER_RULE:
            _user(out, spec, changes)


def _clamp(out: dict[str, Any], key: str, bounds: tuple[float, float] | None) -> bool:
    value = out.get(key)
    if bounds is None or not isinstance(value, int | float) or isinstance(value, bool):
        return False
    lo, hi = bounds
    fitted = min(max(value, lo), hi)
    if fitted == value:
        return False
    out[key] = fitted
    return True


def _sampling(out: dict[str, Any], spec: DialectSpec, changes: list[str]) -> None:
    if _clamp(out, "temperature", spec.temperature_range):
        changes.append("temperature=clamped")
    if _clamp(out, "top_p", spec.top_p_range):
        changes.append("top_p=clamped")
    stop = out.get("stop")
    if spec.stop_max is not None and isinstance(stop, list) and len(stop) > spec.stop_max:
        out["stop"] = stop[: spec.stop_max]
        changes.append("stop=truncated")


def _max_tokens(out: dict[str, Any], spec: DialectSpec, target: Target, changes: list[str]) -> None:
    if spec.max_tokens_only and "max_completion_tokens" in out:
        mct = out.pop("max_completion_tokens")
        if "max_tokens" not in out:
            out["max_tokens"] = mct
        changes.append("max_completion_tokens=max_tokens")
    cap = target.max_output
    mt = out.get("max_tokens")
    if spec.cap_max_tokens and cap is not None and isinstance(mt, int) and mt > cap:
        out["max_tokens"] = cap
        changes.append("max_tokens=capped")


def _tools(out: dict[str, Any], spec: DialectSpec, changes: list[str]) -> None:
    tc = out.get("tool_choice")
    if not spec.tool_choice_forcing and tc is not None and tc != "auto":
        del out["tool_choice"]
        if tc == "none":
            # "auto" would let the model call a tool the client said not to: send no tools.
            out.pop("tools", None)
            changes.append("tools=dropped_for_tool_choice_none")
        else:
            changes.append("tool_choice=auto")
    tools = out.get("tools")
    if spec.drop_function_strict and isinstance(tools, list):
        stripped = [_without_strict(t) for t in tools]
        if any(new is not old for new, old in zip(stripped, tools, strict=True)):
            out["tools"] = stripped
            changes.append("tools.function.strict=dropped")


def _without_strict(tool: Any) -> Any:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or "strict" not in fn:
        return tool
    return {**tool, "function": {k: v for k, v in fn.items() if k != "strict"}}


def _response_format(out: dict[str, Any], spec: DialectSpec, changes: list[str]) -> None:
    rf = out.get("response_format")
    if spec.native_json_schema or not isinstance(rf, dict) or rf.get("type") != "json_schema":
        return
    js = rf.get("json_schema")
    schema = js.get("schema", {}) if isinstance(js, dict) else {}
    out["response_format"] = {"type": "json_object"}
    prompt = SCHEMA_PROMPT.format(schema=orjson.dumps(schema).decode())
    out["messages"] = [{"role": "system", "content": prompt}, *out["messages"]]
    changes.append("response_format=json_object+schema_prompt")


def _drop_image_detail(out: dict[str, Any], changes: list[str]) -> None:
    messages = out.get("messages")
    if not isinstance(messages, list):
        return
    for m in messages:  # most bodies have no content parts: nothing to copy or compare
        if isinstance(m, dict) and isinstance(m.get("content"), list):
            break
    else:
        return
    new = [_message_without_detail(m) for m in messages]
    if any(n is not m for n, m in zip(new, messages, strict=True)):
        out["messages"] = new
        changes.append("image_url.detail=dropped")


def _message_without_detail(msg: Any) -> Any:
    content = msg.get("content") if isinstance(msg, dict) else None
    if not isinstance(content, list):
        return msg
    parts = [_part_without_detail(p) for p in content]
    if all(n is o for n, o in zip(parts, content, strict=True)):
        return msg
    return {**msg, "content": parts}


def _part_without_detail(part: Any) -> Any:
    img = part.get("image_url") if isinstance(part, dict) else None
    if not isinstance(img, dict) or "detail" not in img:
        return part
    return {**part, "image_url": {k: v for k, v in img.items() if k != "detail"}}


def _drop_fields(out: dict[str, Any], spec: DialectSpec, changes: list[str]) -> None:
    for key in spec.drop_fields:
        if key in out:
            value = out.pop(key)
            if key not in NO_OP_VALUES or value != NO_OP_VALUES[key]:
                changes.append(f"{key}=dropped")


def _user(out: dict[str, Any], spec: DialectSpec, changes: list[str]) -> None:
    if spec.user_field is None or "user" not in out:
        return
    user = out.pop("user")
    if isinstance(user, str) and 6 <= len(user) <= 128:
        out[spec.user_field] = user
        changes.append(f"user={spec.user_field}")
    else:
        changes.append("user=dropped")


def _stream_options(out: dict[str, Any], spec: DialectSpec) -> None:
    """Ask every stream for usage (the gateway meters it); the relay hides it if not asked.

    Not reported: the client sees exactly the usage it asked for.
    """
    if out.get("stream") is not True:
        return
    if spec.usage_always:
        out.pop("stream_options", None)
        return
    opts = out.get("stream_options")
    if not (isinstance(opts, dict) and opts.get("include_usage") is True):
        out["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}


def client_wants_usage(body: dict[str, Any]) -> bool:
    """Did the client ask for a final usage chunk (``stream_options.include_usage``)?"""
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True
