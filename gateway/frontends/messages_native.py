"""A Messages request sent as is to a host that speaks Messages (Z.ai's and BigModel's
Anthropic endpoints): :class:`~gateway.frontends.base.NativeCall` for ``/v1/messages``.

Only the model id changes on the way up; the client's ``anthropic-version`` and
``anthropic-beta`` go along when their values look like what Anthropic publishes (a date, a
list of feature tokens), and nothing else of the client's headers. On the way down the host's
``Message`` or events go back with the client's model name put back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from gateway.catalogue.target import Target

_VERSION: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_BETA: Final = re.compile(r"[a-z0-9][a-z0-9.\-]{0,63}(\s*,\s*[a-z0-9][a-z0-9.\-]{0,63}){0,31}")
DEFAULT_VERSION: Final = "2023-06-01"
_MESSAGE_STOP: Final = b"message_stop"
_STARTS: Final = frozenset({"text", "thinking", "redacted_thinking", "tool_use"})
STOP_REASONS: Final = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}
)
"""Anthropic's stop reasons; a host's other value (GLM's ``network_error``) is a failure."""


def passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``anthropic-version`` (a date; default 2023-06-01) and ``anthropic-beta`` (feature
    tokens), only when well-formed: the client picks no other upstream header."""
    version = headers.get("anthropic-version", DEFAULT_VERSION).strip()
    out = {"anthropic-version": version if _VERSION.fullmatch(version) else DEFAULT_VERSION}
    beta = headers.get("anthropic-beta", "").strip()
    if beta and _BETA.fullmatch(beta):
        out["anthropic-beta"] = beta
    return out


def _tokens(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    inp, out = usage.get("input_tokens"), usage.get("output_tokens")
    cached = usage.get("cache_read_input_tokens")
    got: dict[str, int] = {}
    if isinstance(inp, int):
        got["prompt_tokens"] = inp + (cached if isinstance(cached, int) else 0)
        if isinstance(cached, int) and cached > 0:
            got["cached_tokens"] = cached
    if isinstance(out, int):
        got["completion_tokens"] = out
    return got or None


def fold_system_turns(messages: Any) -> Any:
    """Anthropic's API takes only ``user`` and ``assistant`` turns; Claude Code also sends
    ``role: system`` mid-conversation (a beta). For a host's own Messages endpoint each such
    turn becomes a ``<system-reminder>`` text block at the head of the next user turn (as
    Claude Code itself does when a host refuses it), or a user turn of its own at the end."""
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "system" for m in messages
    ):
        return messages
    out: list[Any] = []
    pending: list[dict[str, Any]] = []
    for msg in messages:
        if isinstance(msg, dict) and msg.get("role") == "system":
            pending.append(
                {"type": "text", "text": f"<system-reminder>{_text(msg)}</system-reminder>"}
            )
            continue
        if pending and isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            msg = {**msg, "content": [*pending, *(blocks if isinstance(blocks, list) else [])]}
            pending = []
        out.append(msg)
    if pending:
        out.append({"role": "user", "content": pending})
    return out


def _text(msg: dict[str, Any]) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


_UNFOLDED: Final[Any] = object()


class MessagesNative:
    """One Messages request, ready for hosts that speak Messages."""

    api = "messages"
    __slots__ = ("_body", "_client_headers", "_headers", "_messages")

    def __init__(self, body: dict[str, Any], headers: Mapping[str, str]) -> None:
        self._body = body
        self._client_headers = headers
        self._headers: dict[str, str] | None = None
        self._messages: Any = _UNFOLDED
        """Built when a host that speaks Messages is tried (most requests are translated)."""

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = passed_headers(self._client_headers)
        return self._headers

    def serves(self, target: Target) -> bool:
        return target.messages_url is not None

    def url(self, target: Target) -> str:
        assert target.messages_url is not None
        return target.messages_url

    def body(self, target: Target) -> dict[str, Any]:
        if self._messages is _UNFOLDED:
            self._messages = fold_system_turns(self._body.get("messages"))
        return {**self._body, "model": target.model, "messages": self._messages}

    def accept(self, raw: bytes) -> tuple[bytes, dict[str, int]] | str:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "the host's Message is not valid JSON"
        if not isinstance(obj, dict) or obj.get("type") != "message":
            return "the host's answer is not a Message"
        if not isinstance(obj.get("content"), list):
            return "the host's Message has no content"
        stop = obj.get("stop_reason")
        if isinstance(stop, str) and stop not in STOP_REASONS:
            return f"the host's Message ended with stop_reason {stop!r} (the generation failed)"
        return raw, _tokens(obj.get("usage")) or {}

    def commits(self, event: Any) -> bool:
        if not isinstance(event, dict):
            return False
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block")
            return isinstance(block, dict) and block.get("type") in _STARTS
        return kind in ("content_block_delta", "message_delta", "message_stop")

    def ends(self, event: bytes) -> bool:
        return _MESSAGE_STOP in event and b'"type":"message_stop"' in event.replace(b" ", b"")

    def failed(self, event: Any) -> str | None:
        if not isinstance(event, dict) or event.get("type") != "message_delta":
            return None
        delta = event.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        return reason if isinstance(reason, str) and reason not in STOP_REASONS else None

    def usage(self, event: Any) -> dict[str, int] | None:
        if not isinstance(event, dict):
            return None
        if event.get("type") == "message_start":
            msg = event.get("message")
            return _tokens(msg.get("usage") if isinstance(msg, dict) else None)
        if event.get("type") == "message_delta":
            return _tokens(event.get("usage"))
        return None
