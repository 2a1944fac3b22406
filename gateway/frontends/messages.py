"""Anthropic Messages (``POST /v1/messages``) in and out of the gateway's OpenAI chat form.

:func:`to_chat` turns a Messages body into the chat body the router routes (see
:mod:`.messages_blocks` for content and :mod:`.messages_params` for parameters);
:func:`from_chat` turns the chat completion back into a ``Message``; :func:`error_for` renders a
gateway error in Anthropic's error shape. The stream counterpart is :mod:`.messages_stream`.

Model names: ``[1m]`` at the end of the name (Claude Code's long-context tier) is stripped and
becomes a context need of :data:`LONG_CONTEXT_NEED` tokens; the rest is looked up in
``claude_models`` (client name → gateway model: a variant id, ``auto`` or an alias), falling back
to its ``"*"`` entry, else passed on as sent (the router answers 404 for an unknown model).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from gateway.errors import GatewayError
from gateway.frontends.messages_answer import from_chat
from gateway.frontends.messages_blocks import Turns
from gateway.frontends.messages_fields import Ignored, bad, integer, string, text_of
from gateway.frontends.messages_params import sampling, stop_sequences, thinking, tool_choice, tools
from gateway.frontends.messages_signature import sign_thinking, verify_thinking

__all__ = [
    "LONG_CONTEXT_NEED",
    "ClaudeModels",
    "MessagesRequest",
    "error_body",
    "error_for",
    "from_chat",
    "sign_thinking",
    "to_chat",
    "verify_thinking",
]

LONG_CONTEXT_NEED: Final = 200_000
"""The min-context need a ``[1m]`` model suffix asks for: the largest GLM-4 windows (GLM-4.6 and
4.7, 200K). No GLM-4 chat variant has 1M, so asking for 1M would make every request a 400."""

_LONG_SUFFIX = "[1m]"
_HANDLED: Final = frozenset(
    {
        "model", "messages", "system", "max_tokens", "stream", "tools", "tool_choice",
        "temperature", "top_p", "top_k", "stop_sequences", "metadata", "thinking",
        "output_config", "output_format",
    }
)  # fmt: skip
_IGNORED: Final = frozenset(
    {
        "context_management", "service_tier", "container", "inference_geo", "cache_control",
        "diagnostics", "speed", "user_profile_id",
    }
)  # fmt: skip
"""Known fields that only steer Anthropic's own service: accepted, reported, not forwarded."""


_UNSEEN: Final[Any] = object()


class ClaudeModels(Mapping[str, str]):
    """Client model name → gateway model (a variant id, alias or ``auto``) by the longest
    configured prefix: ``claude-sonnet`` maps ``claude-sonnet-4-5-20250929`` too."""

    _CACHED = 1024
    """Names remembered with what they map to (clients send a few names, over and over)."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._table = dict(table)
        self._prefixes = sorted(self._table, key=len, reverse=True)
        self._seen: dict[str, str | None] = {}
        self._models: dict[str, tuple[str, int | None]] = {}

    def __getitem__(self, name: str) -> str:
        got: str | None = self.get(name)
        if got is None:
            raise KeyError(name)
        return got

    def get(self, name: str, default: Any = None) -> Any:  # one dict lookup once seen
        seen = self._seen
        got = seen.get(name, _UNSEEN)
        if got is _UNSEEN:
            if len(seen) >= self._CACHED:
                seen.clear()
            got = seen[name] = self._lookup(name)
        return default if got is None else got

    def model_of(self, requested: str) -> tuple[str, int | None]:
        """:func:`_model` of ``requested``, remembered (a bad name raises each time)."""
        got = self._models.get(requested)
        if got is None:
            if len(self._models) >= self._CACHED:
                self._models.clear()
            got = self._models[requested] = _mapped(requested, self)
        return got

    def _lookup(self, name: str) -> str | None:
        lowered = name.lower()
        for prefix in self._prefixes:
            if prefix != "*" and lowered.startswith(prefix.lower()):
                return self._table[prefix]
        return None

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


@dataclass(slots=True)
class MessagesRequest:
    """One Messages request, translated (not frozen: :func:`_plain` builds it slot by slot,
    which a frozen dataclass would make dearer than its keyword call)."""

    chat: dict[str, Any]
    """The OpenAI chat body to route (``model`` already mapped)."""
    requested_model: str
    """The client's ``model`` as sent, echoed in answers."""
    max_tokens: int
    stream: bool
    context_need: int | None = None
    """Minimum context window asked for by a ``[1m]`` suffix, else None."""
    stop_sequences: list[str] = field(default_factory=list)
    """The request's stop sequences (the answer reports which one it stopped at)."""
    ignored: list[str] = field(default_factory=list)
    """What was accepted but not honoured, ``what=how`` (for ``X-GLM-Ignored``)."""


def to_chat(body: Any, claude_models: Mapping[str, str], *, thinking_key: bytes) -> MessagesRequest:
    """Translate a Messages body; ``thinking_key`` checks replayed thinking signatures.

    Raises :class:`~gateway.errors.InvalidRequest` (``param`` = the field's path) for every
    malformed field it reads, and its subclass ``NoCapableVariant`` for content or server tools
    no GLM host here can take. Never raises anything else, whatever the JSON.
    """
    if not isinstance(body, dict):
        raise bad("body", "must be a JSON object.", "invalid_type")
    plain = _plain(body, claude_models)
    return plain if plain is not None else _general(body, claude_models, thinking_key)


def _general(
    body: dict[str, Any], claude_models: Mapping[str, str], thinking_key: bytes
) -> MessagesRequest:
    """:func:`to_chat` for any body (what :func:`_plain` gives, it gives too)."""
    ignored = Ignored()
    requested = string(body.get("model"), "model")
    if not requested:
        raise bad("model", "must not be empty.")
    model, context_need = _model(requested, claude_models)
    max_tokens, stream = _limits(body)
    messages = Turns(thinking_key, ignored).chat_messages(body.get("messages"))
    system = _without_billing_line(body.get("system"), ignored)
    if system is not None:
        messages = [{"role": "system", "content": text_of(system, "system")}, *messages]
    chat: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if stream:
        chat["stream"] = True
    tools(body, chat, ignored)
    tool_choice(body, chat)
    sampling(body, chat)
    thinking(body, chat, ignored)
    _report_rest(body, ignored)
    return MessagesRequest(
        chat=chat,
        requested_model=requested,
        max_tokens=max_tokens,
        stream=stream,
        context_need=context_need,
        stop_sequences=stop_sequences(body),
        ignored=ignored.entries(),
    )


_PLAIN_KEYS: Final = frozenset({"model", "messages", "system", "max_tokens", "stream"})
_new: Final = object.__new__


def _plain(body: dict[str, Any], claude_models: Mapping[str, str]) -> MessagesRequest | None:
    """:func:`to_chat` for the plainest request (the SDKs' first example, a chat client's
    every turn): only the keys in :data:`_PLAIN_KEYS`, a string ``system``, and turns of exactly
    ``role`` and string ``content`` alternating between user and assistant. None for anything
    else, which takes the general path (and so every error and every report stays its).

    Such a body has nothing to report, no stop sequences, no tools or sampling, and Anthropic's
    default of no thinking; each turn becomes one chat message and none merge."""
    if not body.keys() <= _PLAIN_KEYS:
        return None
    requested = body.get("model")
    max_tokens = body.get("max_tokens")
    stream = body.get("stream", False)
    system = body.get("system")
    turns = body.get("messages")
    if (
        type(requested) is not str
        or not requested
        or type(max_tokens) is not int
        or max_tokens < 1
        or type(stream) is not bool
        or (system is not None and type(system) is not str)
        or type(turns) is not list
        or not turns
    ):
        return None
    messages = [] if system is None else [{"role": "system", "content": system}]
    prev = None
    for turn in turns:
        if type(turn) is not dict or len(turn) != 2:
            return None
        said = turn.get("role")
        role = "user" if said == "user" else "assistant" if said == "assistant" else None
        content = turn.get("content")
        if role is None or role is prev or type(content) is not str:
            return None  # another role, a turn to merge with the last, or content blocks
        messages.append({"role": role, "content": content})
        prev = role
    model, context_need = _model(requested, claude_models)
    chat: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if stream:
        chat["stream"] = True
    chat["thinking"] = {"type": "disabled"}  # as :func:`thinking` writes it when absent
    req: MessagesRequest = _new(MessagesRequest)
    req.chat = chat
    req.requested_model = requested
    req.max_tokens = max_tokens
    req.stream = stream
    req.context_need = context_need
    req.stop_sequences = []
    req.ignored = []
    return req


_BILLING = "x-anthropic-billing-header:"


def _without_billing_line(system: Any, ignored: Ignored) -> Any:
    """Claude Code's first system block is a per-conversation billing line for Anthropic
    (``x-anthropic-billing-header: cc_version=...``): dropped, so the system prompt a host
    sees keeps the same prefix from one conversation to the next (its prompt cache)."""
    if not isinstance(system, list):
        return system
    kept = [
        b
        for b in system
        if not (isinstance(b, dict) and str(b.get("text", "")).startswith(_BILLING))
    ]
    if len(kept) != len(system):
        ignored.field("system.billing_header=dropped")
    return kept


def _limits(body: dict[str, Any]) -> tuple[int, bool]:
    """``max_tokens`` (required, positive) and ``stream`` (a boolean, default false)."""
    if "max_tokens" not in body:
        raise bad("max_tokens", "is required (a positive integer).", "missing_field")
    max_tokens = integer(body["max_tokens"], "max_tokens", 1)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad("stream", "must be a boolean.", "invalid_type")
    return max_tokens, bool(stream)


def _model(requested: str, claude_models: Mapping[str, str]) -> tuple[str, int | None]:
    """The gateway model and context need a client's model name asks for."""
    if type(claude_models) is ClaudeModels:
        return claude_models.model_of(requested)
    return _mapped(requested, claude_models)


def _mapped(requested: str, claude_models: Mapping[str, str]) -> tuple[str, int | None]:
    name, need = requested, None
    if name.lower().endswith(_LONG_SUFFIX):
        name, need = name[: -len(_LONG_SUFFIX)].rstrip(), LONG_CONTEXT_NEED
    mapped = claude_models.get(name) or claude_models.get("*") or name
    if not mapped:
        raise bad("model", "names no model once the [1m] suffix is removed.")
    return mapped, need


def _report_rest(body: dict[str, Any], ignored: Ignored) -> None:
    if _has_cache_control(body):
        ignored.field("cache_control=ignored")
    for key in body:
        if key in _HANDLED:
            continue
        if key == "mcp_servers":
            _mcp_servers(body[key])
        elif key in _IGNORED:
            if body[key] is not None and key != "cache_control":
                ignored.field(f"{key}=ignored")
        else:
            ignored.unknown(key)


def _mcp_servers(value: Any) -> None:
    if value is None or value == []:
        return
    raise bad(
        "mcp_servers",
        "the gateway does not connect to MCP servers; run them in the client (as tools).",
        "unsupported_parameter",
    )


_WALKED: Final = ("system", "messages", "tools", "content")


def _has_cache_control(node: Any, depth: int = 0) -> bool:
    """Whether ``cache_control`` appears in the places Anthropic takes it (bounded walk; only
    dicts and lists are walked into, so a string or a number costs no call)."""
    if depth > 4:
        return False
    if isinstance(node, dict):
        if node.get("cache_control") is not None:
            return True
        for key in _WALKED:
            value = node.get(key)
            if isinstance(value, (dict, list)) and _has_cache_control(value, depth + 1):
                return True
        return False
    if isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)) and _has_cache_control(value, depth + 1):
                return True
    return False


_STATUS_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}
"""Anthropic's error type per status (anything else: ``api_error``). 413 is
``invalid_request_error``: Anthropic's docs say ``request_too_large``, but neither its OpenAPI
spec nor its SDK's ``ErrorObject`` union has that type, and clients parse by the union."""

OVERLOADED_STATUS: Final = 529


def error_body(status: int, etype: str, message: str, **extra: Any) -> bytes:
    """Anthropic's error body ``{"type": "error", "error": {"type", "message", ...extra}}``.

    ``status`` is the HTTP status it goes with (not part of the body; kept for symmetry with
    :func:`error_for`). A ``request_id`` in ``extra`` goes at the top level, the rest inside
    ``error`` (Anthropic clients ignore keys they do not know there).
    """
    del status
    request_id = extra.pop("request_id", None)
    err = {"type": etype, "message": message, **extra}
    return orjson.dumps({"type": "error", "error": err, "request_id": request_id})


def error_for(
    err: GatewayError, *, overloaded: bool = False, request_id: str | None = None
) -> tuple[int, bytes]:
    """The status and Anthropic body for a gateway error.

    ``overloaded`` (the lead's call: every attempt failed for capacity, ``UpstreamsFailed`` with
    status 503) gives 529 ``overloaded_error``, which Claude Code retries as Anthropic's own.
    The gateway's ``code``, ``param`` and ``attempts`` stay inside ``error``.
    """
    status = err.status
    if overloaded and status == 503:
        status, etype = OVERLOADED_STATUS, "overloaded_error"
    elif err.type == "timeout_error":  # a deadline that stopped a started stream (status 500)
        etype = "timeout_error"
    else:
        etype = _STATUS_TYPES.get(status, "api_error")
    extra: dict[str, Any] = {"code": err.code}
    if err.param is not None:
        extra["param"] = err.param
    if err.extra:
        extra.update({k: v for k, v in err.extra.items() if k not in ("type", "message")})
    return status, error_body(status, etype, err.message, request_id=request_id, **extra)
