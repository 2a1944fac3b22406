"""What each simulated host refuses, before it answers: the quirks the gateway must adapt around.

Z.ai / BigModel (research note §2.1): ``stop`` of at most one entry, ``temperature`` in [0, 1],
``top_p`` in [0.01, 1], ``tool_choice`` only ``auto``, no ``json_schema``, ``n`` of 1, none of
the OpenAI-only fields (``logprobs``, ``seed``, penalties, ``parallel_tool_calls``,
``max_completion_tokens``), no ``image_url.detail``, no function ``strict``, ``user_id`` of
6-128 characters, ``max_tokens`` within the model's max output, no ``thinking`` for models before
GLM-4.5, and at least one user or tool message. Every other host takes only ``function`` tools
(``web_search`` / ``retrieval`` are Zhipu's own). SiliconFlow refuses ``enable_thinking`` for a
model that does not think (its error 20015).
"""

from __future__ import annotations

from typing import Any

from gateway.simulator import dialects as d
from gateway.simulator.behaviour import Scan, function_tools, requested_output
from gateway.simulator.dialects import ErrorReply
from gateway.simulator.models import SimModel

ZHIPU_UNKNOWN_FIELDS = (
    "logprobs",
    "top_logprobs",
    "seed",
    "logit_bias",
    "parallel_tool_calls",
    "frequency_penalty",
    "presence_penalty",
    "max_completion_tokens",
)


def check_request(
    model: SimModel, body: dict[str, Any], scan: Scan, prompt: int
) -> ErrorReply | None:
    """The host's refusal of this request, or ``None`` when it would answer."""
    dialect = model.dialect
    err = host_checks(model, body, scan)
    if err is not None:
        return err
    if scan.images and not model.accepts_images:
        return d.images_unsupported(dialect)
    if function_tools(body) and not model.function_calling:
        return d.tools_unsupported(dialect)
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema" and not model.json_schema:
        return d.schema_unsupported(dialect)
    want = requested_output(body)
    if prompt + want > model.window:
        return d.context_exceeded(dialect, model.window, prompt, want)
    return None


def host_checks(model: SimModel, body: dict[str, Any], scan: Scan) -> ErrorReply | None:
    """The dialect's own refusals."""
    if model.dialect == d.ZHIPU:
        return zhipu_strictness(body) or zhipu_model_checks(model, body, scan)
    for i, tool in enumerate(body.get("tools") or ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            return d.invalid_field(model.dialect, f"tools[{i}].type", f"{kind!r} is not supported")
    if model.dialect == d.SILICONFLOW and "enable_thinking" in body and not model.thinking:
        return d.invalid_field(
            d.SILICONFLOW, "enable_thinking", "current model does not support parameter"
        )
    return None


def zhipu_strictness(body: dict[str, Any]) -> ErrorReply | None:
    """The BigModel / Z.ai parameter checks that do not depend on the model."""
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 1:
        return d.invalid_field(d.ZHIPU, "stop", "最多支持 1 个停止词 (at most 1 entry)")
    for name, lo in (("temperature", 0.0), ("top_p", 0.01)):
        v = body.get(name)
        if isinstance(v, int | float) and not lo <= v <= 1.0:
            return d.invalid_field(d.ZHIPU, name, f"取值范围 [{lo}, 1.0]")
    choice = body.get("tool_choice")
    if choice is not None and choice != "auto":
        return d.invalid_field(d.ZHIPU, "tool_choice", "仅支持 auto")
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        return d.invalid_field(d.ZHIPU, "response_format", "不支持 json_schema (use json_object)")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        return d.invalid_field(d.ZHIPU, "n", "不支持多个候选 (n must be 1)")
    for name in ZHIPU_UNKNOWN_FIELDS:
        if name in body:
            return d.invalid_field(d.ZHIPU, name, "不支持的参数 (unsupported field)")
    return _zhipu_nested(body)


def _zhipu_nested(body: dict[str, Any]) -> ErrorReply | None:
    for msg in body.get("messages") or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        for part in content if isinstance(content, list) else ():
            img = part.get("image_url") if isinstance(part, dict) else None
            if isinstance(img, dict) and "detail" in img:
                return d.invalid_field(d.ZHIPU, "image_url.detail", "不支持的参数")
    for tool in body.get("tools") or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and "strict" in fn:
            return d.invalid_field(d.ZHIPU, "function.strict", "不支持的参数")
    user_id = body.get("user_id")
    if user_id is not None and not (isinstance(user_id, str) and 6 <= len(user_id) <= 128):
        return d.invalid_field(d.ZHIPU, "user_id", "长度须为 6-128 个字符")
    return None


def zhipu_model_checks(model: SimModel, body: dict[str, Any], scan: Scan) -> ErrorReply | None:
    """The BigModel / Z.ai checks that depend on the model."""
    if not scan.has_input:
        return d.invalid_field(d.ZHIPU, "messages", "至少需要一条 user 或 tool 消息")
    if "thinking" in body and not model.thinking:
        return d.invalid_field(d.ZHIPU, "thinking", "该模型不支持 thinking 参数")
    mt = body.get("max_tokens")
    if model.max_output is not None and isinstance(mt, int) and mt > model.max_output:
        return d.invalid_field(d.ZHIPU, "max_tokens", f"取值范围 [1, {model.max_output}]")
    return None
