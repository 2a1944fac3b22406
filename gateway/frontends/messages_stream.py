"""One Anthropic Messages event stream, built from the gateway's normalised chat chunks.

``start`` → ``message_start``; each ``feed`` turns one chunk into zero or more events; ``end`` →
``message_delta`` + ``message_stop``; ``error`` → one ``error`` event, after which the stream
emits nothing more. Block rules (each a bug other gateways shipped):

- ``reasoning_content`` deltas go into a ``thinking`` block, ``content`` deltas into a ``text``
  block; switching kind closes the open block first (a thinking block closes with a
  ``signature_delta`` over its whole text), so no delta ever lands in a block of another type;
- tool calls are collected per call (OpenAI ``index``; a new ``id`` on an index already holding
  a different call starts a new call) and emitted when the upstream finishes, one complete
  ``tool_use`` block each, in order of first appearance: interleaved argument fragments of
  parallel calls each reach their own block, verbatim, and a call's arguments are checked
  before the client sees them (malformed → one ``{"_raw": ...}`` delta, as in non-stream
  answers). GLM hosts send a call in one chunk, so holding it back costs no latency;
- block indices count from 0 in emission order; a turn with any ``tool_use`` block ends
  ``tool_use`` (unless the host stopped on length or a filter).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.frontends.messages_answer import (
    matched_stop,
    message_id,
    stop_reason,
    tool_input,
    tool_use_block,
    usage,
)
from gateway.frontends.messages_signature import sign_thinking
from gateway.frontends.tool_calls import Call, ToolCalls


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE event: ``event: <kind>`` and its JSON ``data``."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _delta_head(index: int, kind: str, field: str) -> bytes:
    """The bytes of a ``content_block_delta`` event up to its delta's text: what
    ``event("content_block_delta", ...)`` writes, built once per block, not once per chunk."""
    return (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
        + str(index).encode()
        + b',"delta":{"type":"'
        + kind.encode()
        + b'","'
        + field.encode()
        + b'":'
    )


_DELTA_TAIL = b"}}\n\n"


class MessagesStream:
    """The state of one Messages stream; not thread-safe, one per response."""

    def __init__(
        self,
        requested_model: str,
        *,
        thinking_key: bytes,
        stop_sequences: list[str] | None = None,
    ) -> None:
        self.model = requested_model
        self.key = thinking_key
        self.stops = stop_sequences or []
        self.id = message_id()
        self._index = 0
        self._open: str | None = None
        self._head = b""
        """The open block's delta event head (:func:`_delta_head`)."""
        self._thinking: list[str] = []
        self._text_tail = ""
        self._tools = ToolCalls()
        self._finish: Any = None
        self._matched: str | None = None
        self._usage: Any = None
        self._input_estimate = 0
        self._done = False

    def start(self, input_tokens_estimate: int) -> bytes:
        """``message_start``: an empty message with the prompt's estimated input tokens."""
        self._input_estimate = max(input_tokens_estimate, 0)
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "stop_details": None,
            "container": None,
            "usage": usage(None, self._input_estimate),
        }
        return event("message_start", {"type": "message_start", "message": message})

    def ping(self) -> bytes:
        """A ``ping`` event (keep-alive)."""
        return event("ping", {"type": "ping"})

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The events for one normalised ``chat.completion.chunk`` (often none)."""
        if self._done:
            return b""
        usage = chunk.get("usage")
        if usage is not None and isinstance(usage, dict):
            self._usage = usage
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return b""
        choice = choices[0]
        if not isinstance(choice, dict):
            return b""
        delta = choice.get("delta")
        out = self._delta(delta) if delta and isinstance(delta, dict) else b""
        finish = choice.get("finish_reason")
        if finish is not None and isinstance(finish, str):
            self._finish = finish
            said = matched_stop(choice, "", self.stops)
            self._matched = said or self._matched
        return out

    def text(self, quoted: bytes) -> bytes:
        """:meth:`feed` for a chunk that is only more answer text, given as its JSON string
        (quotes included): relayed as it came, not decoded unless a stop sequence needs it."""
        if self._done or quoted == b'""':
            return b""
        out = b"" if self._open == "text" else self._open_block("text")
        if self.stops:
            self._text_tail = (self._text_tail + orjson.loads(quoted))[-256:]
        return out + self._head + quoted + _DELTA_TAIL

    def texts(self, quoted: list[bytes]) -> bytes:
        """:meth:`text` for each of several JSON strings in a row, joined."""
        if self._done or self.stops or self._open != "text":
            return b"".join([self.text(q) for q in quoted])
        if b'""' in quoted:
            quoted = [q for q in quoted if q != b'""']
        if not quoted:
            return b""
        head = self._head  # every event is head + text + tail: one join, nothing per event
        return head + (_DELTA_TAIL + head).join(quoted) + _DELTA_TAIL

    def end(self) -> bytes:
        """Close the open block, emit the tool calls, then ``message_delta`` and
        ``message_stop``."""
        if self._done:
            return b""
        out = self._close() + b"".join(self._tool_block(c) for c in self._tools.calls)
        self._done = True
        tool_use = bool(self._tools.calls)
        sequence = (
            None if tool_use else self._matched or matched_stop({}, self._text_tail, self.stops)
        )
        reason = stop_reason(self._finish, tool_use=tool_use, sequence=sequence)
        u = usage(self._usage, self._input_estimate)
        reported = isinstance(self._usage, dict) and "prompt_tokens" in self._usage
        delta_usage = {
            "input_tokens": u["input_tokens"] if reported else None,
            "output_tokens": u["output_tokens"],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": u["cache_read_input_tokens"],
            "output_tokens_details": None,
            "server_tool_use": None,
        }
        delta = {
            "stop_reason": reason,
            "stop_sequence": sequence if reason == "stop_sequence" else None,
            "stop_details": None,
            "container": None,
        }
        out += event(
            "message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage}
        )
        return out + event("message_stop", {"type": "message_stop"})

    def error(self, status: int, etype: str, message: str) -> bytes:
        """An ``error`` event; the stream is over (no ``message_stop`` follows)."""
        del status  # the HTTP status is already sent; the event carries only the type
        if self._done:
            return b""
        self._done = True
        body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": None}
        return event("error", body)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        out = b""
        reasoning = delta.get("reasoning_content")
        if reasoning and isinstance(reasoning, str):
            if self._open != "thinking":
                out += self._open_block("thinking")
            self._thinking.append(reasoning)
            out += self._head + orjson.dumps(reasoning) + _DELTA_TAIL
        text = delta.get("content")
        if text and isinstance(text, str):
            if self._open != "text":
                out += self._open_block("text")
            if self.stops:  # only a stop sequence needs the text's end
                self._text_tail = (self._text_tail + text)[-256:]
            out += self._head + orjson.dumps(text) + _DELTA_TAIL
        if "tool_calls" not in delta:
            return out
        self._tools.feed(delta.get("tool_calls"))
        return out

    def _open_block(self, kind: str) -> bytes:
        if self._open == kind:
            return b""
        out = self._close()
        block: dict[str, Any]
        if kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self._head = _delta_head(self._index, "thinking_delta", "thinking")
        else:
            block = {"type": "text", "text": "", "citations": None}
            self._head = _delta_head(self._index, "text_delta", "text")
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + event("content_block_start", start)

    def _block_delta(self, delta: dict[str, Any]) -> bytes:
        data = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return event("content_block_delta", data)

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._open == "thinking":
            signature = sign_thinking("".join(self._thinking), self.key)
            self._thinking = []
            out += self._block_delta({"type": "signature_delta", "signature": signature})
        out += event("content_block_stop", {"type": "content_block_stop", "index": self._index})
        self._open = None
        self._index += 1
        return out

    def _tool_block(self, call: Call) -> bytes:
        arguments = "".join(call.fragments)
        block = tool_use_block({"id": call.id, "function": {"name": call.name}})
        block["input"] = {}
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        out = event("content_block_start", start)
        for fragment in _checked(call.fragments, arguments):
            out += self._block_delta({"type": "input_json_delta", "partial_json": fragment})
        out += event("content_block_stop", {"type": "content_block_stop", "index": self._index})
        self._index += 1
        return out


def _checked(fragments: list[str], arguments: str) -> list[str]:
    """The fragments to send: as received when they join to a JSON object, none when empty,
    else one fragment holding ``{"_raw": arguments}``."""
    if not arguments.strip():
        return []
    parsed = tool_input(arguments)
    if parsed == {"_raw": arguments}:
        return [orjson.dumps(parsed).decode()]
    return fragments
