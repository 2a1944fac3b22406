"""OpenAI Responses (``POST /v1/responses``, stateless) in and out of the gateway's chat form.

:func:`to_chat` turns a Responses body into the chat body the router routes (input items in
:mod:`.responses_items`, tools and formats in :mod:`.responses_tools`); :func:`from_chat`
(:mod:`.responses_answer`) turns the chat completion back into a ``Response``; errors are
OpenAI's ``{"error": {"message", "type", "param", "code"}}``. The stream counterpart is
:mod:`.responses_stream`.

The gateway keeps no state: ``previous_response_id`` and ``conversation`` are a 400 asking for
the whole input (a silently ignored one would answer without the conversation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from gateway.errors import GatewayError
from gateway.frontends.messages_fields import Ignored, array, bad, integer, number, string
from gateway.frontends.responses_answer import from_chat
from gateway.frontends.responses_items import Items, seal, unseal
from gateway.frontends.responses_tools import (
    Names,
    WebSearch,
    reasoning,
    text_format,
    tool_choice,
    tools,
)

__all__ = ["ResponsesRequest", "error_body", "from_chat", "seal", "to_chat", "unseal"]

_HANDLED: Final = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
        "max_output_tokens", "temperature", "top_p", "reasoning", "stream", "include", "store",
        "metadata", "user", "prompt_cache_key", "client_metadata", "truncation",
        "previous_response_id", "conversation", "service_tier", "safety_identifier",
        "stream_options", "background", "max_tool_calls", "top_logprobs",
    }
)  # fmt: skip
_NOT_FORWARDED: Final = (
    "prompt_cache_key", "client_metadata", "metadata", "user", "store", "truncation",
    "service_tier", "safety_identifier", "stream_options", "max_tool_calls", "top_logprobs",
)  # fmt: skip
_NOT_FORWARDED_SET: Final = frozenset(_NOT_FORWARDED)
_STRINGS: Final = ("prompt_cache_key", "user", "safety_identifier", "service_tier")
_STRINGS_SET: Final = frozenset(_STRINGS)
ENCRYPTED: Final = "reasoning.encrypted_content"


@dataclass(slots=True)
class ResponsesRequest:
    """One Responses request, translated."""

    chat: dict[str, Any]
    """The OpenAI chat body to route."""
    requested_model: str
    stream: bool
    names: Names
    """Flat function names ↔ namespaced ones (answers map them back)."""
    echo: dict[str, Any]
    """The request's fields as every ``Response`` echoes them (``tools``, ``temperature`` ...):
    its keys from ``previous_response_id`` to the end, in their order (the fixed ones too), so
    a Response is its head then this, and a stream dumps it once."""
    summary: bool = False
    """A reasoning summary was asked: reasoning goes out as ``summary_text``."""
    encrypted: bool = False
    """``include`` asked ``reasoning.encrypted_content``: reasoning goes out sealed."""
    ignored: list[str] = field(default_factory=list)
    key: bytes = field(default=b"", repr=False)
    """The server key sealing the reasoning the answer returns."""


def to_chat(body: Any, *, key: bytes, web_search: WebSearch = "drop") -> ResponsesRequest:
    """Translate a Responses body; ``key`` unseals replayed reasoning.

    ``web_search``: ``"builtin"`` forwards a ``web_search`` tool as the gateway's built-in
    tool need (only hosts running it are picked); ``"drop"`` removes it and says so in
    ``ignored``. Raises only :class:`~gateway.errors.InvalidRequest` (``param`` = the path).
    """
    if not isinstance(body, dict):
        raise bad("body", "must be a JSON object.", "invalid_type")
    if _PLAIN.issuperset(body):
        plain = _plain(body, key)
        if plain is not None:
            return plain
    for stateful in ("previous_response_id", "conversation"):
        if body.get(stateful) is not None:
            raise bad(stateful, "the gateway keeps no state; send the whole input instead.",
                      "unsupported_parameter")  # fmt: skip
    model = string(body.get("model"), "model")
    if not model:
        raise bad("model", "must not be empty.")
    ignored, names = Ignored(), Names()
    chat: dict[str, Any] = {"model": model}
    echo_tools = tools(body, chat, names, web_search=web_search, ignored=ignored)
    messages = Items(key, ignored, names.flat).chat_messages(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None:
        messages.insert(0, {"role": "system", "content": string(instructions, "instructions")})
    chat["messages"] = messages
    stream = _flag(body, "stream")
    if stream:
        chat["stream"] = True
    temperature, top_p, max_output_tokens = _sampling(body, chat)
    choice = tool_choice(body, chat, names)
    fmt = text_format(body, chat)
    echo_reasoning, summary = reasoning(body, chat)
    include, passive = _passive(body, ignored)
    echo = {  # the Response's keys from previous_response_id on, in its order (skeleton)
        "previous_response_id": None,
        "instructions": instructions,
        "tools": echo_tools,
        "tool_choice": choice,
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "text": {"format": fmt},
        "temperature": temperature,
        "top_p": top_p,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": 0,
        "max_output_tokens": max_output_tokens,
        "max_tool_calls": None,
        "reasoning": echo_reasoning,
        **passive,
    }
    return ResponsesRequest(chat, model, stream, names, echo, summary, ENCRYPTED in include,
                            ignored.entries(), key)  # fmt: skip


_PLAIN: Final = frozenset(
    {"model", "input", "instructions", "stream", "max_output_tokens", "temperature", "top_p"}
)
"""The fields of a plain request (no tools, formats, reasoning or passive fields), which
:func:`_plain` translates at once."""
_PLAIN_ROLES: Final = {"user": "user", "system": "system", "developer": "system"}


def _plain(body: dict[str, Any], key: bytes) -> ResponsesRequest | None:
    """:func:`to_chat` for a body of :data:`_PLAIN` fields whose model, instructions and stream
    are well typed and whose input is a string or ``user``/``system``/``developer`` messages
    with string content; None for any other (the general path then reads it, or says what is
    wrong): the same request, with the steps that find nothing to do skipped."""
    model = body.get("model")
    instructions = body.get("instructions")
    stream = body.get("stream")
    if (
        type(model) is not str
        or not model
        or (instructions is not None and type(instructions) is not str)
        or (stream is not None and type(stream) is not bool)
    ):
        return None
    value = body.get("input")
    if type(value) is str:
        messages = [{"role": "user", "content": value}]
    elif type(value) is list and value:
        messages = []
        for item in value:
            if type(item) is not dict or item.get("type", "message") != "message":
                return None
            role, content = item.get("role"), item.get("content")
            if type(role) is not str or role not in _PLAIN_ROLES or type(content) is not str:
                return None
            messages.append({"role": _PLAIN_ROLES[role], "content": content})
    else:
        return None
    if instructions is not None:
        messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    if stream:
        chat["stream"] = True
    temperature, top_p, max_output_tokens = _sampling(body, chat)
    echo: dict[str, Any] = {  # as to_chat's, every step but _sampling having found nothing
        "previous_response_id": None,
        "instructions": instructions,
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}},
        "temperature": temperature,
        "top_p": top_p,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": 0,
        "max_output_tokens": max_output_tokens,
        "max_tool_calls": None,
        "reasoning": None,
        "truncation": "disabled",
        "store": False,
        "background": False,
        "service_tier": "default",
        "metadata": {},
        "safety_identifier": "",
        "prompt_cache_key": "",
    }
    return ResponsesRequest(chat, model, bool(stream), Names(), echo, False, False, [], key)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise bad(name, "must be a boolean.", "invalid_type")
    return bool(value)


def _sampling(body: dict[str, Any], chat: dict[str, Any]) -> tuple[float, float, int | None]:
    """``temperature``, ``top_p`` and ``max_output_tokens`` as echoed (put on ``chat`` when
    sent)."""
    temperature = top_p = 1.0
    limit = None
    if body.get("temperature") is not None:
        chat["temperature"] = temperature = number(body["temperature"], "temperature", 0.0, 2.0)
    if body.get("top_p") is not None:
        chat["top_p"] = top_p = number(body["top_p"], "top_p", 0.0, 1.0)
    if body.get("max_output_tokens") is not None:
        limit = integer(body["max_output_tokens"], "max_output_tokens", 1)
        chat["max_tokens"] = limit
    return temperature, top_p, limit


_PASSIVE: Final = frozenset(
    {"include", "metadata", "truncation", "prompt_cache_key", "background", *_STRINGS,
     *_NOT_FORWARDED}
)  # fmt: skip
"""The fields :func:`_passive` reads: a body with none of them (and nothing unknown) echoes
the defaults."""


def _passive(body: dict[str, Any], ignored: Ignored) -> tuple[list[str], dict[str, Any]]:
    """Fields accepted, not forwarded (each sent one named in ``ignored``): ``include``, and
    the echoed ones, in the Response's order (from ``truncation`` on)."""
    if _PASSIVE.isdisjoint(body) and _HANDLED.issuperset(body):  # what the steps below give
        return [], {
            "truncation": "disabled", "store": False, "background": False,
            "service_tier": "default", "metadata": {}, "safety_identifier": "",
            "prompt_cache_key": "",
        }  # fmt: skip
    return _read_passive(body, ignored)


def _read_passive(body: dict[str, Any], ignored: Ignored) -> tuple[list[str], dict[str, Any]]:
    """:func:`_passive`, field by field."""
    raw = body.get("include")
    include: list[str] = []
    if raw is not None:
        include = [string(v, f"include[{i}]") for i, v in enumerate(array(raw, "include"))]
        if any(v != ENCRYPTED for v in include):  # logprobs, sources ...: nothing makes them
            ignored.field("include=partly_ignored")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad("metadata", "must be an object.", "invalid_type")
    truncation = body.get("truncation") or "disabled"
    if truncation not in ("auto", "disabled"):
        raise bad("truncation", "must be auto or disabled.")
    cache_key = body.get("prompt_cache_key")
    if _flag(body, "background"):
        raise bad("background", "the gateway keeps no state; background responses need it.",
                  "unsupported_parameter")  # fmt: skip
    if not _STRINGS_SET.isdisjoint(body):  # (set checks in C: most bodies have none of these)
        for name in _STRINGS:
            if body.get(name) is not None:
                string(body[name], name)
    if not _NOT_FORWARDED_SET.isdisjoint(body):
        for name in _NOT_FORWARDED:
            if body.get(name) is not None:
                ignored.field(f"{name}=ignored")
    if not _HANDLED.issuperset(body):
        for name in body:
            if name not in _HANDLED:
                ignored.unknown(name)
    return include, {
        "truncation": truncation,
        "store": False,  # a stateless gateway stores nothing, whatever the request asked
        "background": False,
        "service_tier": "default",
        "metadata": metadata or {},
        # OpenAI's schema has both as strings (never null); Open Responses requires them
        "safety_identifier": body.get("safety_identifier") or "",
        "prompt_cache_key": cache_key or "",
    }


def error_body(err: GatewayError) -> bytes:
    """OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``."""
    return err.body_bytes()
