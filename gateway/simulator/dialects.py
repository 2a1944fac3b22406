"""How each host dialect says things: error bodies, the thinking switch, the reasoning field.

Dialects: ``zhipu`` (BigModel / Z.ai: ``{"error": {"code": "<string>", "message"}}`` bodies,
strict parameter ranges, no ``object`` field), ``openrouter`` (``reasoning`` +
``reasoning_details``, ``{"error": {"message", "code": <int>, "metadata"}}`` for host-side
failures), ``siliconflow`` (OpenAI-shaped answers, ``enable_thinking``, errors as
``{"code": <int>, "message", "data": null}``) and the OpenAI-shaped ``openai`` and ``vllm``.
Every function here is pure: it builds an :class:`ErrorReply` or reads a request body, and never
touches HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ZHIPU = "zhipu"
OPENROUTER = "openrouter"
SILICONFLOW = "siliconflow"
VLLM = "vllm"
OPENAI = "openai"
DIALECTS: tuple[str, ...] = (OPENAI, ZHIPU, OPENROUTER, SILICONFLOW, VLLM)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error answer: HTTP status, JSON body and extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def openai_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type_: str | None = None,
) -> ErrorReply:
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = type_ or _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "api_error")
    err = {"message": message, "type": kind, "param": param, "code": code}
    return ErrorReply(status, {"error": err})


def zhipu_error(status: int, code: str, message: str) -> ErrorReply:
    """A BigModel / Z.ai error: ``{"error": {"code": "<string>", "message"}}``."""
    return ErrorReply(status, {"error": {"code": code, "message": message}})


def siliconflow_error(status: int, code: int | None, message: str) -> ErrorReply:
    """A SiliconFlow error: ``{"code": <int>, "message", "data": null}`` (no code on 429s)."""
    body: dict[str, Any] = {} if code is None else {"code": code}
    return ErrorReply(status, {**body, "message": message, "data": None})


def openrouter_error(status: int, message: str, metadata: dict[str, Any]) -> ErrorReply:
    """An OpenRouter error: ``{"error": {"message", "code": <int status>, "metadata"}}``."""
    return ErrorReply(status, {"error": {"message": message, "code": status, "metadata": metadata}})


def fault_error(dialect: str, status: int, code: str | None, message: str | None) -> ErrorReply:
    """The error a fault rule asks for, in the dialect's own shape."""
    text = message or f"Simulated upstream error (HTTP {status})"
    if dialect == ZHIPU:
        return zhipu_error(status, code or str(status), text)
    if dialect == OPENROUTER:
        meta: dict[str, Any] = {"provider_name": "simulator"}
        if code is not None:
            meta["raw"] = code
        return openrouter_error(status, text, meta)
    if dialect == SILICONFLOW:
        return siliconflow_error(status, int(code) if code and code.isdigit() else None, text)
    return openai_error(status, text, code=code)


# --- named errors ------------------------------------------------------------------------------


def unknown_provider(provider: str) -> ErrorReply:
    """404 for a path prefix that names no provider in the table."""
    return openai_error(404, f"Unknown provider `{provider}`", code="not_found")


def not_found(path: str) -> ErrorReply:
    """404 for a path the simulator does not serve."""
    return openai_error(404, f"No route for `{path}`", code="not_found")


def model_not_found(dialect: str, model: object) -> ErrorReply:
    """The host's answer to a model id it does not serve."""
    if dialect == ZHIPU:
        return zhipu_error(400, "1211", "模型不存在，请检查模型代码。")
    if dialect == SILICONFLOW:
        return siliconflow_error(400, 20012, "Model does not exist. Please check it carefully.")
    return openai_error(
        404, f"The model `{model}` does not exist", code="model_not_found", param="model"
    )


def check_auth(dialect: str, authorization: str | None) -> ErrorReply | None:
    """``None`` when the Authorization header passes, else the host's 401/402/429.

    Keys starting ``bad`` are refused; keys starting ``broke`` belong to an account without
    balance. vLLM (no ``--api-key``) takes requests without any header.
    """
    if authorization is None and dialect == VLLM:
        return None
    bearer = authorization is not None and authorization[:7].lower() == "bearer "
    key = authorization[7:].strip() if bearer and authorization else ""
    if not key:
        if dialect == ZHIPU:
            return zhipu_error(401, "1001", "Header中未收到Authorization参数，无法进行身份验证。")
        return openai_error(401, "Missing bearer authentication in header", code="invalid_api_key")
    if key.startswith("bad"):
        if dialect == ZHIPU:
            return zhipu_error(
                401, "1002", "Authorization Token非法，请确认Authorization Token正确传递。"
            )
        return openai_error(401, "Incorrect API key provided", code="invalid_api_key")
    if key.startswith("broke"):
        if dialect == ZHIPU:
            return zhipu_error(429, "1113", "您的账户已欠费（余额不足），请充值后重试。")
        if dialect == SILICONFLOW:
            msg = (
                "The selected model requires paid balance. Your paid balance is insufficient. "
                "Please top up and try again."
            )
            return siliconflow_error(403, 30011, msg)
        return ErrorReply(402, {"error": {"message": "Insufficient credits", "code": 402}})
    return None


def invalid_body(dialect: str, why: str, param: str | None = None) -> ErrorReply:
    """400 for a body that is not JSON or lacks what a chat completion needs."""
    if dialect == ZHIPU:
        return zhipu_error(400, "1210", f"API 调用参数有误，请检查文档。{why}")
    return openai_error(400, why, param=param)


def invalid_field(dialect: str, name: str, why: str) -> ErrorReply:
    """400 naming one request field the host refuses (zhipu 1214, SiliconFlow 20015)."""
    if dialect == ZHIPU:
        return zhipu_error(400, "1214", f"输入参数错误: `{name}` {why}")
    if dialect == SILICONFLOW:
        return siliconflow_error(400, 20015, f"Value error, {why} `{name}`.")
    return openai_error(400, f"Invalid parameter `{name}`: {why}", param=name)


def images_unsupported(dialect: str) -> ErrorReply:
    """400 for an ``image_url`` part sent to a text-only model."""
    if dialect == ZHIPU:
        msg = "API 调用参数有误: 该模型不支持图片输入 (image_url not supported)"
        return zhipu_error(400, "1210", msg)
    return openai_error(400, "This model does not support image input", param="messages")


def tools_unsupported(dialect: str) -> ErrorReply:
    """400 for function tools sent to a model without function calling."""
    if dialect == ZHIPU:
        msg = "输入参数错误: 该模型不支持工具调用 (`tools` not supported)"
        return zhipu_error(400, "1214", msg)
    if dialect == VLLM:
        return openai_error(
            400,
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
            "to be set",
            type_="BadRequestError",
            param="tools",
        )
    return openai_error(400, "This model does not support tools (function calling)", param="tools")


def schema_unsupported(dialect: str) -> ErrorReply:
    """400 for ``response_format: json_schema`` on a model without native structured output."""
    if dialect == ZHIPU:
        return invalid_field(dialect, "response_format", "不支持 json_schema (use json_object)")
    return openai_error(
        400,
        "This model does not support response_format of type json_schema",
        param="response_format",
    )


def context_exceeded(dialect: str, context: int, prompt: int, completion: int) -> ErrorReply:
    """400 for a prompt plus requested output that does not fit the window."""
    if dialect == ZHIPU:
        return zhipu_error(400, "1261", "Prompt exceeds max length")
    msg = (
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the completion)."
        " Please reduce the length of the messages or completion."
    )
    return openai_error(400, msg, param="messages", code="context_length_exceeded")


def bad_directive(why: str) -> ErrorReply:
    """400 for a ``<<sim:...>>`` directive the simulator cannot parse (any dialect)."""
    return openai_error(400, f"Bad simulator directive: {why}", code="sim_bad_directive")


# --- request fields ------------------------------------------------------------------------------


def thinking_enabled(dialect: str, body: dict[str, Any]) -> bool:
    """Whether the request leaves reasoning on, read from the dialect's own switch."""
    if dialect == OPENROUTER:
        r = body.get("reasoning")
        if isinstance(r, dict):
            return (
                r.get("enabled") is not False
                and r.get("exclude") is not True
                and (r.get("effort") != "none")
            )
        return True
    if dialect == SILICONFLOW:
        return body.get("enable_thinking") is not False
    ctk = body.get("chat_template_kwargs")
    if dialect in (VLLM, OPENAI) and isinstance(ctk, dict) and ctk.get("enable_thinking") is False:
        return False
    if dialect == OPENAI and body.get("reasoning_effort") == "none":
        return False
    th = body.get("thinking")
    if dialect in (ZHIPU, OPENAI) and isinstance(th, dict):
        return th.get("type") != "disabled"
    return True


def reasoning_fields(dialect: str, text: str) -> dict[str, Any]:
    """The message/delta fields that carry reasoning ``text`` in this dialect."""
    if dialect == OPENROUTER:
        return {"reasoning": text, "reasoning_details": [{"type": "reasoning.text", "text": text}]}
    return {"reasoning_content": text}
