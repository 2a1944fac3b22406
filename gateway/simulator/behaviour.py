"""What the simulated host answers: refusals, text, reasoning, tool calls, usage, SSE.

Everything is deterministic and works on plain dicts (orjson in, orjson out). The request is
read once by :func:`scan_messages`; :func:`gateway.simulator.checks.check_request` refuses what
the host would refuse; :func:`plan_answer` decides the answer; :func:`completion_body` and
:func:`stream_plan` put it on the wire in the model's dialect.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.simulator import dialects as d
from gateway.simulator.faults import MARK, Rule, extract_directives
from gateway.simulator.instances import prompt_schema, safe_instance
from gateway.simulator.models import SimModel

_CJK = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
)
_IMAGE_TOKENS = 1000
_MESSAGE_TOKENS = 4
DONE = b"data: [DONE]\n\n"
TAG_THINK = ("<think>", "</think>")
TAG_BOX = ("<|begin_of_box|>", "<|end_of_box|>")
TAG_PIECE_CHARS = 7
"""Tagged answers stream in 7-character pieces, so tags are cut across chunks as in real life."""


class BadRequest(ValueError):
    """The body is not a usable chat-completions request; the message says why."""


# --- reading the request -----------------------------------------------------------------------


def char_counts(text: str) -> tuple[int, int]:
    """(CJK characters, other characters) in ``text``."""
    if text.isascii():
        return 0, len(text)
    other = len(_CJK.sub("", text))
    return len(text) - other, other


def count_tokens(text: str) -> int:
    """Estimated tokens: ceil(cjk / 1.5 + other / 4.5)."""
    cjk, other = char_counts(text)
    return math.ceil(cjk / 1.5 + other / 4.5)


@dataclass(slots=True)
class Scan:
    """What one pass over ``messages`` found."""

    cjk: int = 0
    other: int = 0
    images: int = 0
    messages: int = 0
    has_input: bool = False
    """A user or tool message is present (zhipu refuses requests without one)."""
    last_user: str = ""
    """Text of the last user message, directives removed."""
    last_role: str = ""
    directives: list[str] = field(default_factory=list)

    def count(self, text: str) -> None:
        """Add ``text`` to the character counts."""
        cjk, other = char_counts(text)
        self.cjk += cjk
        self.other += other

    def add_text(self, text: str) -> str:
        """Count ``text``; collect and strip its directives; return the stripped text."""
        self.count(text)
        if MARK in text:
            text = extract_directives(text, self.directives)
        return text


def scan_messages(messages: Any) -> Scan:
    """Count text and images, find directives and the last user text. Raises BadRequest."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    scan = Scan(messages=len(messages))
    for msg in messages:
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise BadRequest("each message must be an object with a string 'role'")
        role: str = msg["role"]
        texts = [scan.add_text(t) for t in _texts(msg, scan)]
        if role == "user":
            scan.last_user = " ".join(t for t in texts if t)
        scan.has_input = scan.has_input or role in ("user", "tool")
        scan.last_role = role
    return scan


def _texts(msg: dict[str, Any], scan: Scan) -> list[str]:
    content = msg.get("content")
    out: list[str] = []
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif kind == "image_url":
                scan.images += 1
    reasoning = msg.get("reasoning_content")
    if isinstance(reasoning, str):
        scan.count(reasoning)
    calls = msg.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise BadRequest("a message's 'tool_calls' must be an array")
    for call in calls or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            scan.count(fn["arguments"] + str(fn.get("name", "")))
    return out


def prompt_tokens(scan: Scan, tools: Any) -> int:
    """Prompt tokens: text estimate + 1,000 per image + tools JSON + 4 per message."""
    other = scan.other + (len(orjson.dumps(tools)) if tools else 0)
    text = math.ceil(scan.cjk / 1.5 + other / 4.5)
    return text + _IMAGE_TOKENS * scan.images + _MESSAGE_TOKENS * scan.messages


def requested_output(body: dict[str, Any]) -> int:
    """``max_tokens`` or ``max_completion_tokens`` when a positive int, else 0."""
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return 0


def function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``function`` objects of the request's function tools."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    return [
        t["function"]
        for t in tools
        if isinstance(t, dict)
        and t.get("type") == "function"
        and isinstance(t.get("function"), dict)
    ]


# --- the answer --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """The decided reply, before it is put on the wire."""

    content: str | None
    reasoning: str | None
    tool_call: dict[str, Any] | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tagged: bool = False
    """GLM-4.5V style: reasoning and answer box are tags inside ``content``."""
    cached_tokens: int = 0
    """The part of the prompt read from the deployment's prompt cache (:mod:`.prefix_cache`)."""

    def usage(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object (GLM's too: ``prompt_tokens_details.cached_tokens``)."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return out


def plan_answer(
    model: SimModel, body: dict[str, Any], scan: Scan, prompt: int, uid: str, rule: Rule | None
) -> Answer:
    """Decide content, reasoning, tool call and finish_reason for a request the host accepts."""
    echo = scan.last_user[:40]
    reasoning = None
    if model.thinking and d.thinking_enabled(model.dialect, body):
        reasoning = f'The user wrote "{echo}". I should answer briefly as {model.variant}.'
    call = None
    finish = "stop"
    if rule is not None and rule.content is not None:
        content: str | None = rule.content
    else:
        call = None if scan.last_role == "tool" else _tool_call(body, uid, rule)
        content = None if call else _content(model, body, echo)
        if content is not None and not _wants_json(body):
            content, finish = _fit(content, requested_output(body))
    if call is not None:
        finish = "tool_calls"
    if rule is not None and rule.finish_reason is not None:
        finish = rule.finish_reason
    used = count_tokens(content or "") + count_tokens(reasoning or "")
    if call is not None:
        used += count_tokens(call["function"]["arguments"])
        if rule is not None and rule.tool_args_object:
            call["function"]["arguments"] = orjson.loads(call["function"]["arguments"])
    if model.tagged_content and content is not None:
        think = f"{TAG_THINK[0]}{reasoning}{TAG_THINK[1]}" if reasoning else ""
        content, reasoning = f"{think}{TAG_BOX[0]}{content}{TAG_BOX[1]}", None
        return Answer(content, None, call, finish, prompt, used, tagged=True)
    return Answer(content, reasoning, call, finish, prompt, used)


def _tool_call(body: dict[str, Any], uid: str, rule: Rule | None) -> dict[str, Any] | None:
    """The first offered tool (or the one ``tool_choice`` names) with generated arguments;
    with a ``tool_call`` rule, that tool with the rule's arguments, or no call when the request
    does not offer it."""
    choice = body.get("tool_choice")
    fns = function_tools(body) if choice != "none" else []
    if not fns:
        return None
    fn = fns[0]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        fn = next((f for f in fns if f.get("name") == name), fn)
    wanted = rule.tool_call if rule is not None else None
    if isinstance(wanted, dict):
        found = next((f for f in fns if f.get("name") == wanted["name"]), None)
        if found is None:
            return None
        fn, args = found, wanted["arguments"]
    else:
        args = safe_instance(fn.get("parameters") or {"type": "object"})
    return {
        "id": f"call_{uid}",
        "type": "function",
        "function": {"name": str(fn.get("name", "")), "arguments": orjson.dumps(args).decode()},
    }


def _wants_json(body: dict[str, Any]) -> bool:
    rf = body.get("response_format")
    return isinstance(rf, dict) and rf.get("type") in ("json_schema", "json_object")


def _content(model: SimModel, body: dict[str, Any], echo: str) -> str:
    text = f"Hello from {model.variant} via {model.provider}."
    if echo:
        text += f" You said: {echo}"
    rf = body.get("response_format")
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "json_schema":
        spec = rf.get("json_schema") if isinstance(rf, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(safe_instance(schema or {"type": "object"})).decode()
    if kind == "json_object":
        schema = prompt_schema(body["messages"])
        value = safe_instance(schema) if schema is not None else {"answer": text}
        return orjson.dumps(value).decode()
    return text


def _fit(content: str, limit: int) -> tuple[str, str]:
    used = count_tokens(content)
    if limit <= 0 or used <= limit:
        return content, "stop"
    return content[: max(1, len(content) * limit // used)], "length"


# --- the wire ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """The top-level fields every body or chunk of one answer carries."""

    id: str
    created: int
    model: str
    dialect: str
    request_id: str

    def top(self, obj: str) -> dict[str, Any]:
        """``id``, ``object`` (zhipu: ``request_id`` instead), ``created``, ``model``."""
        out: dict[str, Any] = {"id": self.id}
        if self.dialect == d.ZHIPU:
            out["request_id"] = self.request_id
        else:
            out["object"] = obj
        out["created"] = self.created
        out["model"] = self.model
        return out


def completion_body(answer: Answer, env: Envelope) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` body."""
    msg: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.reasoning is not None:
        msg.update(d.reasoning_fields(env.dialect, answer.reasoning))
    if answer.tool_call is not None:
        msg["tool_calls"] = [answer.tool_call]
    out = env.top("chat.completion")
    out["choices"] = [{"index": 0, "message": msg, "finish_reason": answer.finish_reason}]
    out["usage"] = answer.usage()
    return out


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """SSE events of one streamed answer, in three parts so faults can cut between them."""

    head: list[bytes]
    """The role chunk, then reasoning chunks."""
    body: list[bytes]
    """Content chunks, or the one tool-call chunk."""
    tail: list[bytes]
    """The finish chunk, the usage chunk if any, and ``[DONE]``."""
    error: list[bytes] = field(default_factory=list)
    """For a ``stream_error`` fault: the error event (and ``[DONE]`` where the host sends one),
    sent after the cut instead of ``tail``."""


def stream_plan(
    answer: Answer, env: Envelope, include_usage: bool, stream_error: Any = None
) -> StreamPlan:
    """The ``chat.completion.chunk`` events of ``answer`` in the dialect's streaming shape."""
    top = env.top("chat.completion.chunk")

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**top, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    head = [event({"role": "assistant"})]
    if answer.reasoning:
        head += [event(d.reasoning_fields(env.dialect, p)) for p in split_pieces(answer.reasoning)]
    if answer.tool_call is not None:
        body = [event({"tool_calls": [{"index": 0, **answer.tool_call}]})]
    else:
        text = answer.content or ""
        pieces = (
            [text[i : i + TAG_PIECE_CHARS] for i in range(0, len(text), TAG_PIECE_CHARS)]
            if answer.tagged
            else split_pieces(text)
        )
        body = [event({"content": p}) for p in pieces]
    last = {**top, "choices": [{"index": 0, "delta": {}, "finish_reason": answer.finish_reason}]}
    if env.dialect == d.ZHIPU:
        last["usage"] = answer.usage()
    tail = [_sse(last)]
    if include_usage and env.dialect != d.ZHIPU:
        tail.append(_sse({**top, "choices": [], "usage": answer.usage()}))
    tail.append(DONE)
    error = [] if stream_error is None else stream_error_events(env, top, stream_error)
    return StreamPlan(head, body, tail, error)


def stream_error_events(env: Envelope, top: dict[str, Any], spec: Any) -> list[bytes]:
    """An error inside a 200 stream, as the host sends it (``spec``: {code, message})."""
    spec = spec if isinstance(spec, dict) else {}
    code, message = spec.get("code"), str(spec.get("message") or "Simulated stream error")
    if env.dialect == d.OPENROUTER:
        err = {"code": code if code is not None else "server_error", "message": message}
        chunk = {
            **top,
            "error": err,
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
        return [_sse(chunk), DONE]
    if env.dialect == d.ZHIPU:
        return [_sse({"error": {"code": str(code or 500), "message": message}})]
    err = {"message": message, "type": "server_error", "param": None, "code": code}
    return [_sse({"error": err})]


def split_pieces(text: str, words: int = 5, max_chars: int = 48) -> list[str]:
    """``text`` in pieces of ``words`` words (long runs sliced), concatenating back to it."""
    parts = text.split(" ")
    out: list[str] = []
    for i in range(0, len(parts), words):
        piece = " ".join(parts[i : i + words]) + (" " if i + words < len(parts) else "")
        if len(piece) <= max_chars:
            out.append(piece)
        else:
            out.extend(piece[j : j + 32] for j in range(0, len(piece), 32))
    return [p for p in out if p]


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
