"""The native Anthropic Messages endpoint Z.ai and BigModel serve GLM behind
(``https://api.z.ai/api/anthropic``, ``https://open.bigmodel.cn/api/anthropic``): ``POST
/{provider}/anthropic/v1/messages`` (``?beta=true`` too) for providers of the ``zhipu`` dialect,
the same models as their chat endpoint.

A request goes as a chat request does: record (``api: "messages"``) -> provider -> auth
(``x-api-key`` or ``Authorization: Bearer``) -> JSON -> the provider's Coding Plan window
(:mod:`.plans`; ``/{provider}/coding/anthropic`` is the plan) -> model -> scan -> fault ->
checks -> answer. The answer is decided by the chat simulator's own
:func:`~.behaviour.plan_answer` on a chat-shaped view of the body (tools, ``tool_choice``,
thinking on for ``enabled`` / ``adaptive``)
and written by :mod:`.messages_stream`. Directives are read from ``system``, string contents and
text blocks, and ``tool_result`` contents. Refused as the host would: no ``max_tokens``, a
``max_tokens`` over the model's output limit, images on a text-only model, tools on a model
without function calling, a prompt (with ``max_tokens``) over the window; an unknown model is a
404 ``not_found_error``. Errors are Anthropic's ``{"type": "error", "error": {type, message}}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from aiohttp import web

from gateway.simulator import dialects as d
from gateway.simulator import messages_stream as wire
from gateway.simulator.behaviour import BadRequest, Scan, plan_answer, prompt_tokens
from gateway.simulator.dialects import ErrorReply
from gateway.simulator.faults import DirectiveError, Rule, echo_key
from gateway.simulator.malformed import malformed_wire
from gateway.simulator.models import SimModel
from gateway.simulator.state import STATE, SimState
from gateway.simulator.writer import (
    error_response,
    fault_head,
    json_response,
    rule_headers,
    send_plan,
    send_wire,
    trickle,
)

API = "messages"
THINKING_ON = frozenset({"enabled", "adaptive"})
bad = wire.anthropic_error


async def messages_route(request: web.Request) -> web.StreamResponse:
    """Record, then refuse as the host would (auth, body, model), apply a fault, or answer."""
    state = request.app[STATE]
    provider = request.match_info["provider"]
    body = await state.read_body(request, provider, API)
    if state.table.dialect(provider) != d.ZHIPU:
        return error_response(d.not_found(request.path))
    key = request_key(request.headers.get("x-api-key"), request.headers.get("Authorization"))
    refusal = check_key(key)
    if refusal is not None:
        return error_response(refusal)
    if not isinstance(body, dict):
        return error_response(bad(400, "The request body is not valid JSON."))
    spent = state.plans.refuse(provider, request.path, API)
    if spent is not None:
        return error_response(spent)
    model = state.table.get(provider, body.get("model"))
    if model is None:
        return error_response(bad(404, f"model: {body.get('model')}"))
    try:
        scan = scan_body(body)
        rule = echo_key(state.faults.select(scan.directives, model, API), f"Bearer {key}")
    except BadRequest as exc:
        return error_response(bad(400, str(exc)))
    except DirectiveError as exc:
        return error_response(bad(400, f"Bad simulator directive: {exc}", "sim_bad_directive"))
    if rule is not None:
        stream = body.get("stream") is True
        early = await fault_head(request, state, rule, stream, wire.fault_error)
        if early is not None:
            return early
    return await _answer(request, state, model, body, scan, rule)


async def _answer(
    request: web.Request,
    state: SimState,
    model: SimModel,
    body: dict[str, Any],
    scan: Scan,
    rule: Rule | None,
) -> web.StreamResponse:
    """Apply the host's checks, then answer as a ``Message`` or its SSE events."""
    prompt = prompt_tokens(scan, body.get("tools"))
    refusal = check_body(model, body, scan, prompt)
    if refusal is not None:
        return error_response(refusal, rule)
    uid = state.next_uid()
    view = chat_view(body)
    answer = plan_answer(model, view, scan, prompt, uid, rule)
    where = f"{request.match_info['provider']}/{body['model']}"
    prefix = [{"system": body.get("system")}, *(body.get("messages") or ())]
    cached = state.prefix_cache.serve(where, prefix, prompt)
    answer = dataclasses.replace(answer, cached_tokens=cached)
    stops = body.get("stop_sequences")
    stops = [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else []
    reply = wire.build_reply(answer, uid, str(body["model"]), stops)
    plan = None
    if body.get("stream") is True:
        plan = wire.stream_plan(reply, rule.stream_error if rule is not None else None)
    if rule is not None and rule.trickle_ms > 0:
        return await trickle(request, state, rule, plan)
    if rule is not None and rule.malformed is not None:
        err = wire.fault_error(200, rule.code, rule.message).body
        whole = orjson.dumps(wire.message_body(reply))
        stop = plan.tail[-1] if plan is not None else b""
        broken = wire.BROKEN_EVENT
        cut = rule.cut_after_chunks
        out = malformed_wire(rule.malformed, plan, whole, err, rule.status, cut, broken, stop)
        if out is not None:
            return await send_wire(request, state, out, rule)
    if plan is not None:
        return await send_plan(request, state, plan, rule)
    return json_response(wire.message_body(reply), headers=rule_headers(rule))


# --- reading the request -----------------------------------------------------------------------


def request_key(x_api_key: str | None, authorization: str | None) -> str:
    """The key from ``x-api-key``, else from ``Authorization: Bearer``; empty when neither."""
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return ""


def check_key(key: str) -> ErrorReply | None:
    """401 without a key or for one starting ``bad``; 429 (Zhipu 1113) for ``broke``."""
    if not key:
        return bad(401, "x-api-key header is required")
    if key.startswith("bad"):
        return bad(401, "invalid x-api-key")
    if key.startswith("broke"):
        return bad(429, "您的账户已欠费（余额不足），请充值后重试。", "1113")
    return None


def scan_body(body: dict[str, Any]) -> Scan:
    """Count text and images, find directives and the last user text. Raises BadRequest."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required")
    scan = Scan(messages=len(messages))
    system = body.get("system")
    if system is not None:
        _content_texts(system, scan, "system")
        scan.messages += 1
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        assert isinstance(msg, dict)
        texts, results = _content_texts(msg.get("content"), scan, f"messages.{i}.content")
        said = " ".join(t for t in texts if t)
        if role == "user" and said:
            scan.last_user = said
        scan.has_input = scan.has_input or role == "user"
        scan.last_role = "tool" if role == "user" and results else role
    return scan


def _content_texts(content: Any, scan: Scan, where: str) -> tuple[list[str], bool]:
    """The texts of a string or block list (directives stripped), and whether it holds a
    ``tool_result``; counts everything else on ``scan``."""
    if isinstance(content, str):
        return [scan.add_text(content)], False
    if not isinstance(content, list):
        raise BadRequest(f"{where}: Input should be a valid string or a list of blocks")
    texts: list[str] = []
    results = False
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind is None:
            raise BadRequest(f"{where}: each block must be an object with a 'type'")
        assert isinstance(block, dict)
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(scan.add_text(block["text"]))
        elif kind in ("image", "document"):
            scan.images += 1
        elif kind == "tool_use":
            scan.count(str(block.get("name", "")) + orjson.dumps(block.get("input")).decode())
        elif kind == "tool_result":
            results = True
            inner = block.get("content")
            if inner is not None:
                _content_texts(inner, scan, f"{where}.content")
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            scan.count(block["thinking"])
    return texts, results


def chat_view(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions fields :func:`plan_answer` reads, taken from a Messages body."""
    tools = [
        {
            "type": "function",
            "function": {"name": t["name"], "parameters": t.get("input_schema")},
        }
        for t in body.get("tools") or ()
        if isinstance(t, dict)
        and isinstance(t.get("name"), str)
        and t.get("type", "custom") == "custom"
    ]
    view: dict[str, Any] = {"model": body.get("model"), "messages": [], "tools": tools}
    view["max_tokens"] = body.get("max_tokens")
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "none":
        view["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice, dict):
        view["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    thinking = body.get("thinking")
    on = isinstance(thinking, dict) and thinking.get("type") in THINKING_ON
    view["thinking"] = {"type": "enabled" if on else "disabled"}
    return view


def check_body(model: SimModel, body: dict[str, Any], scan: Scan, prompt: int) -> ErrorReply | None:
    """The host's refusal of this request, or ``None`` when it would answer."""
    mt = body.get("max_tokens")
    if mt is None:
        return bad(400, "max_tokens: Field required")
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
        return bad(400, "max_tokens: Input should be a valid integer greater than or equal to 1")
    if model.max_output is not None and mt > model.max_output:
        why = "which is the maximum allowed number of output tokens for"
        return bad(400, f"max_tokens: {mt} > {model.max_output}, {why} {model.model}")
    if scan.images and not model.accepts_images:
        return bad(400, f"messages: model {model.model} does not support image input")
    if chat_view(body)["tools"] and not model.function_calling:
        return bad(400, f"tools: model {model.model} does not support tool use")
    if prompt > model.window:
        return bad(400, f"prompt is too long: {prompt} tokens > {model.window} maximum")
    if prompt + mt > model.window:
        return bad(
            400,
            f"input length and `max_tokens` exceed context limit: {prompt} + {mt} > "
            f"{model.window}, decrease input length or `max_tokens` and try again",
        )
    return None
