"""One Responses event stream, built from the gateway's normalised chat chunks.

``start`` → ``response.created`` + ``response.in_progress``; each ``feed`` turns one chunk into
zero or more events; ``end`` closes the open item, emits the tool calls and
``response.completed`` (``response.incomplete`` when the host stopped on length or a filter);
``fail`` → ``response.failed`` + ``error``, after which the stream emits nothing more. Every
event carries ``sequence_number``, counting from 0. Item rules:

- ``reasoning_content`` deltas go into a ``reasoning`` item (summary events only when a summary
  was asked), ``content`` deltas into a ``message`` item; switching kind closes the open item
  first (``response.output_item.done`` with the whole item), so no delta lands in another item;
- tool calls are collected per call (OpenAI ``index``; a new ``id`` on an index holding another
  call starts a new call) and emitted when the upstream finishes, one whole ``function_call``
  item each, in order of first appearance: interleaved argument fragments of parallel calls
  each reach their own item verbatim, and one item is open at a time. GLM hosts send a call in
  one chunk, so holding it back costs no latency.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

import orjson

from gateway.frontends.responses import ResponsesRequest
from gateway.frontends.responses_answer import (
    INCOMPLETE,
    call_item,
    message_item,
    new_id,
    new_ids,
    output_text,
    reasoning_item,
    skeleton,
    token_count,
    usage_of,
)
from gateway.frontends.tool_calls import Call, ToolCalls

_HEADS: dict[str, bytes] = {}
"""Event kind -> ``event: <kind>\ndata: {"type":"<kind>","sequence_number":`` (what
:meth:`ResponsesStream._event` writes before the number), built once per kind."""


def _head(kind: str) -> bytes:
    head = _HEADS.get(kind)
    if head is None:
        k = kind.encode()
        head = _HEADS[kind] = b"event: " + k + b'\ndata: {"type":"' + k + b'","sequence_number":'
    return head


_SEQ: list[bytes] = []
"""``b'<n>,"delta":'`` for n = 0, 1, ...: the bytes between a text delta's prefix and its
text, built once per process for the numbers streams have reached."""
_SEQ_CACHED = 1 << 16
"""Past this many events a stream's numbers are formatted each time (no unbounded cache)."""
_DELTA_END = b"}\n\n"


def _seq_deltas(first: int, n: int) -> list[bytes]:
    """``_SEQ[first : first + n]``, growing the cache when a stream goes further."""
    end = first + n
    if end > len(_SEQ):
        if end > _SEQ_CACHED:
            return [b'%d,"delta":' % i for i in range(first, end)]
        grown = min(max(end, 2 * len(_SEQ), 64), _SEQ_CACHED)
        _SEQ.extend([b'%d,"delta":' % i for i in range(len(_SEQ), grown)])
    return _SEQ[first:end]


_CREATED = _head("response.created")
_IN_PROGRESS = _head("response.in_progress")
_ITEM_ADDED = _head("response.output_item.added")
_PART_ADDED = _head("response.content_part.added")
_TEXT_DONE = _head("response.output_text.done")
_PART_DONE = _head("response.content_part.done")
_ITEM_DONE = _head("response.output_item.done")
_EVENT_END = b"}\n\n"
_EMPTY_PART = orjson.dumps(output_text(""))


def _around_id() -> tuple[bytes, bytes]:
    """An open message item's JSON (``message_item`` dumped, no content yet) before and after
    its id's JSON string."""
    before, after = orjson.dumps({**message_item("", "", "in_progress"), "content": []}).split(
        b'"id":""'
    )
    return before + b'"id":', after


_ITEM_OPEN = _around_id()


def _around_text() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes, bytes]]:
    """A finished message item's JSON (``message_item`` dumped) in pieces: its content
    part before and after the text's JSON string; the item before its id's, between that and
    the part, after the part. The text is dumped once, not once per event that carries it."""
    part = orjson.dumps(output_text("\x00"))
    item = orjson.dumps(message_item("\x00", "\x01"))
    before, after = item.split(part)
    head, between = before.split(b'"\\u0001"')
    around = part.split(b'"\\u0000"')
    return (around[0], around[1]), (head, between, after)


_PART_TEXT, _ITEM_PART = _around_text()
_MESSAGE_DELTA = (
    b"response.output_text.delta",
    b',"content_index":0,"logprobs":[],"sequence_number":',
)
_SUMMARY_DELTA = (
    b"response.reasoning_summary_text.delta",
    b',"summary_index":0,"sequence_number":',
)


def _response_pieces() -> list[bytes]:
    """A ``Response`` (:func:`skeleton`) dumped with a placeholder for each of its first nine
    values that a stream sets (id, created_at, completed_at, status, incomplete_details,
    error, model, output, usage), cut around them: ten pieces, the last ``}`` where the
    echoed request (``ResponsesRequest.echo``, dumped once per stream) goes."""
    stub: Any = SimpleNamespace(requested_model="\x16", echo={})
    response = skeleton(stub, "\x10", "\x11")  # type: ignore[arg-type]
    slots = ("completed_at", "status", "incomplete_details", "error", "output", "usage")
    response.update({k: chr(n) for k, n in zip(slots, b"\x12\x13\x14\x15\x17\x18", strict=True)})
    dumped = orjson.dumps(response)  # "\x10" as "\u0010" ...
    assert re.findall(rb'"\\u001(\d)"', dumped) == [b"%d" % n for n in range(9)]
    return re.split(rb'"\\u001\d"', dumped)


_R = _response_pieces()
_STARTED = b"".join((b"null", _R[3], b'"in_progress"', _R[4], b"null", _R[5], b"null"))
"""A ``Response`` in progress from its completed_at to its error (between _R[2] and _R[6])."""
_ZERO_USAGE = orjson.dumps(usage_of(None))
_NO_OUTPUT = b"".join((b"[]", _R[8], _ZERO_USAGE))
_RESPONSE = b',"response":'
_COMPLETED = _head("response.completed")
_COMPLETED_STATE = b"".join((_R[3], b'"completed"', _R[4], b"null"))
"""A completed ``Response`` after its ``completed_at`` value, to its ``error``'s."""
_INCOMPLETE_KIND = _head("response.incomplete")
_INCOMPLETE = {
    reason: b"".join((b"null", _R[3], b'"incomplete"', _R[4], orjson.dumps({"reason": why})))
    for reason, why in INCOMPLETE.items()
}
"""A finish reason that leaves the ``Response`` incomplete → its ``completed_at`` to its
``incomplete_details`` (with the pieces between them), as :func:`finish` sets them."""
_FAILED = _head("response.failed")
_FAILED_STATE = b"".join((b"null", _R[3], b'"failed"', _R[4], b"null"))


def _usage_template() -> bytes:
    """``usage_of`` dumped with ``%d`` for its five counts, in the order of :func:`_usage_json`'s
    arguments (input, cached, output, reasoning, total)."""
    probe = {
        "prompt_tokens": 1000001,
        "prompt_tokens_details": {"cached_tokens": 1000002},
        "completion_tokens": 1000003,
        "completion_tokens_details": {"reasoning_tokens": 1000004},
    }
    dumped = orjson.dumps(usage_of(probe))
    counts = [b"1000001", b"1000002", b"1000003", b"1000004", b"2000004"]
    assert sorted(counts, key=dumped.index) == counts
    assert all(dumped.count(n) == 1 for n in counts)
    for n in counts:
        dumped = dumped.replace(n, b"%d")
    return dumped


_USAGE = _usage_template()


def _usage_json(usage: Any) -> bytes:
    """``orjson.dumps(usage_of(usage))``, the counts written into :data:`_USAGE`."""
    if type(usage) is not dict:
        return _ZERO_USAGE
    inp, out = token_count(usage, "prompt_tokens"), token_count(usage, "completion_tokens")
    cached = token_count(usage.get("prompt_tokens_details"), "cached_tokens")
    reasoning = token_count(usage.get("completion_tokens_details"), "reasoning_tokens")
    return _USAGE % (inp, cached, out, reasoning, inp + out)


def _seq_delta(n: int) -> bytes:
    return _SEQ[n] if n < len(_SEQ) else _seq_deltas(n, 1)[0]


class ResponsesStream:
    """The state of one Responses stream; not thread-safe, one per response."""

    __slots__ = (
        "_at", "_done", "_echo", "_finish", "_item_id", "_model", "_msg_id", "_open", "_output",
        "_pre", "_prefix", "_seq", "_texts", "_tools", "_usage", "req",
    )  # fmt: skip

    def __init__(self, req: ResponsesRequest) -> None:
        self.req = req
        rid, self._msg_id = new_ids("resp", "msg")
        """The first message item's id, drawn with the response's (then "": new_id)."""
        self._output: list[bytes] = []
        """The response's output items so far, each as JSON (as its ``output_item.done``)."""
        self._pre = b"".join((_R[0], orjson.dumps(rid), _R[1], b"%d" % int(time.time()), _R[2]))
        """The ``Response`` up to its ``completed_at`` value (:func:`_response_pieces`)."""
        self._model = b"".join((_R[6], orjson.dumps(req.requested_model), _R[7]))
        """From after its ``error`` value to its ``output`` value."""
        echo = orjson.dumps(req.echo)
        self._echo = b"," + echo[1:] if len(echo) > 2 else _R[9]
        """From after its ``usage`` value to the end: the request echoed, dumped once."""
        self._seq = 0
        self._open: str | None = None
        self._item_id = ""
        self._texts: list[str | bytes] = []
        """The open item's text so far: strings, or JSON strings (bytes, quotes included)
        as plain chunks gave them, decoded when the item closes."""
        self._tools: ToolCalls | None = None
        """The tool calls so far, from the first chunk that has ``tool_calls``."""
        self._finish: Any = None
        self._usage: Any = None
        self._done = False
        self._prefix: bytes | None = None
        """The open item's text-delta event prefix (built on its first delta)."""
        self._at = b""
        """The open item's ``{"item_id":...,"output_index":...`` (:meth:`_item_event`)."""

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        """One event: ``{"type": kind, "sequence_number": n, **data}`` as JSON (``data`` has
        neither key and is not empty), its head from :func:`_head`, the rest one dump."""
        return self._event_json(kind, orjson.dumps(data))

    def _event_json(self, kind: str, data: bytes) -> bytes:
        """:meth:`_event` for ``data`` already dumped (``{...}``, not ``{}``)."""
        seq = self._seq
        self._seq = seq + 1
        # one copy of ``data`` (a whole response is kilobytes), not one per concatenation
        return b"".join((_head(kind), str(seq).encode(), b",", memoryview(data)[1:], b"\n\n"))

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``: the response written once."""
        data = b"".join((_RESPONSE, self._pre, _STARTED, self._model, _NO_OUTPUT, self._echo))
        seq = self._seq
        self._seq = seq + 2
        return b"".join(
            (
                _CREATED, b"%d" % seq, data, _EVENT_END,
                _IN_PROGRESS, b"%d" % (seq + 1), data, _EVENT_END,
            )
        )  # fmt: skip

    def _response(self, kind: bytes, ended: bytes, error: bytes, usage: bytes) -> bytes:
        """A whole-response event (``kind``, its head): the ``Response`` with ``ended`` (its
        values from ``completed_at`` to ``incomplete_details``, with the pieces between them),
        ``error`` and ``usage`` (JSON), and the output items so far."""
        seq = self._seq
        self._seq = seq + 1
        return b"".join(
            (
                kind, b"%d" % seq, _RESPONSE, self._pre, ended, _R[5], error, self._model,
                b"[", b",".join(self._output), b"]", _R[8], usage, self._echo, _EVENT_END,
            )
        )  # fmt: skip

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The events for one normalised ``chat.completion.chunk`` (often none)."""
        if self._done:
            return b""
        if self._prefix is not None:  # an item open with text: more text, cheaply?
            fast = self._more_text(chunk)
            if fast is not None:
                return fast
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return b""
        delta = choice.get("delta")
        out = self._delta(delta) if isinstance(delta, dict) else b""
        if isinstance(choice.get("finish_reason"), str):
            self._finish = choice["finish_reason"]
        return out

    def text(self, quoted: bytes) -> bytes:
        """:meth:`feed` for a chunk that is only more answer text, given as its JSON string
        (quotes included): the delta event carries it as it came."""
        if self._done or quoted == b'""':
            return b""
        prefix = self._prefix
        if prefix is None or self._open != "message":
            return self._delta({"content": orjson.loads(quoted)})
        self._texts.append(quoted)  # decoded with the rest when the item closes
        seq = self._seq
        self._seq = seq + 1
        return prefix + _seq_delta(seq) + quoted + _DELTA_END

    def texts(self, quoted: list[bytes]) -> bytes:
        """:meth:`text` for each of several JSON strings in a row, joined: each event is
        prefix, number, text and end, the events' pieces laid out in one list."""
        prefix = self._prefix
        if self._done or prefix is None or self._open != "message":
            return b"".join([self.text(q) for q in quoted])
        kept = [q for q in quoted if q != b'""'] if b'""' in quoted else quoted
        seq = self._seq
        self._seq = seq + len(kept)
        if not kept:
            return b""
        self._texts.extend(kept)  # decoded with the rest when the item closes
        pieces = [prefix, b"", b"", _DELTA_END] * len(kept)  # one join, no piece made per event
        pieces[1::4] = _seq_deltas(seq, len(kept))
        pieces[2::4] = kept
        return b"".join(pieces)

    def end(self) -> bytes:
        """Close the open item, emit the tool calls, then ``response.completed`` (or
        ``response.incomplete``)."""
        if self._done:
            return b""
        out = [self._close()]
        if self._tools is not None and self._tools.calls:
            out += [self._call_events(c) for c in self._tools.calls]
        self._done = True
        ended = _INCOMPLETE.get(self._finish) if self._finish is not None else None
        if ended is None:  # as finish() sets a completed response: completed_at now
            kind, ended = _COMPLETED, b"%d%s" % (int(time.time()), _COMPLETED_STATE)
        else:
            kind = _INCOMPLETE_KIND
        out.append(self._response(kind, ended, b"null", _usage_json(self._usage)))
        return b"".join(out)

    def fail(self, code: str, message: str, *, rate_limited: bool = False) -> bytes:
        """``response.failed`` (the response so far, ``status: failed``) then ``error`` with the
        gateway's own ``code``; the stream is over. The Response's ``error.code`` is one of
        OpenAI's enum: ``rate_limit_exceeded`` or ``server_error``."""
        if self._done:
            return b""
        self._done = True
        kind = "rate_limit_exceeded" if rate_limited else "server_error"
        error = orjson.dumps({"code": kind, "message": message})
        out = self._response(_FAILED, _FAILED_STATE, error, _ZERO_USAGE)
        err = {"code": code, "message": message, "param": None}
        return out + self._event("error", {**err, "error": {"type": "server_error", **err}})

    def _more_text(self, chunk: dict[str, Any]) -> bytes | None:
        """The common chunk, cheaply: more text for the open message item and nothing else
        (no usage, reasoning, tool call or finish). None: take the general path."""
        prefix = self._prefix
        if prefix is None or self._open != "message" or "usage" in chunk:
            return None
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return None
        choice = choices[0]
        delta = choice.get("delta") if type(choice) is dict else None
        if type(delta) is not dict or choice.get("finish_reason") is not None:
            return None
        text = delta.get("content")
        if type(text) is not str or not text or len(delta) > 2:  # content (+ role) only
            return None
        if len(delta) == 2 and "role" not in delta:
            return None
        self._texts.append(text)
        seq = self._seq
        self._seq = seq + 1
        return prefix + _seq_delta(seq) + orjson.dumps(text) + _DELTA_END

    def _delta(self, delta: dict[str, Any]) -> bytes:
        out = b""
        reasoning = delta.get("reasoning_content")
        if reasoning and isinstance(reasoning, str):
            out += self._text("reasoning", reasoning)
        text = delta.get("content")
        if text and isinstance(text, str):
            out += self._text("message", text)
        calls = delta.get("tool_calls")
        if calls is not None:
            if self._tools is None:
                self._tools = ToolCalls()
            self._tools.feed(calls)
        return out

    def _where(self) -> dict[str, Any]:
        return {"item_id": self._item_id, "output_index": len(self._output)}

    def _text(self, kind: str, text: str) -> bytes:
        out = b"" if self._open == kind else self._close() + self._open_item(kind)
        if kind != "message" and not self.req.summary:
            self._texts.append(text)
            return out
        prefix = self._prefix
        if prefix is None:  # once per item: the event's fixed part, as bytes
            prefix = self._prefix = self._delta_prefix(kind)
        quoted = orjson.dumps(text)
        self._texts.append(quoted)  # as the plain chunks' texts: joined in one decode
        seq = self._seq
        self._seq = seq + 1
        return b"".join((out, prefix, _seq_delta(seq), quoted, _DELTA_END))

    def _delta_prefix(self, kind: str) -> bytes:
        """``event: ...\ndata: {...,"sequence_number":`` for this item's text deltas (the same
        keys as :meth:`_event` gives, in the same order but ``delta`` last)."""
        name, rest = _MESSAGE_DELTA if kind == "message" else _SUMMARY_DELTA
        return b"event: " + name + b'\ndata: {"type":"' + name + b'",' + self._at[1:] + rest

    def _item_event(self, kind: str, data: dict[str, Any]) -> bytes:
        """:meth:`_event` with the open item's ``item_id`` and ``output_index`` first, as
        ``{**self._where(), **data}`` gives them (``data`` not empty), from :attr:`_at`."""
        return self._event_json(kind, self._at + b"," + orjson.dumps(data)[1:])

    def _open_item(self, kind: str) -> bytes:
        self._open, self._texts, self._prefix = kind, [], None
        if kind == "message" and self._msg_id:
            item_id, self._msg_id = self._msg_id, ""
        else:
            item_id = new_id("msg" if kind == "message" else "rs")
        self._item_id = item_id
        self._at = (  # what _where() dumps, once for the item's events
            b'{"item_id":' + orjson.dumps(item_id) + b',"output_index":' + b"%d" % len(self._output)
        )
        if kind == "message":  # two events, as _item_event writes them, in one join
            seq = self._seq
            self._seq = seq + 2
            at = self._at[1:]
            return b"".join(
                (
                    _ITEM_ADDED, str(seq).encode(), b",", at, b',"item":',
                    _ITEM_OPEN[0], orjson.dumps(item_id), _ITEM_OPEN[1], _EVENT_END,
                    _PART_ADDED, str(seq + 1).encode(), b",", at, b',"content_index":0,"part":',
                    _EMPTY_PART, _EVENT_END,
                )
            )  # fmt: skip
        item = {"type": "reasoning", "id": item_id, "summary": []}
        out = self._item_event("response.output_item.added", {"item": item})
        if self.req.summary:
            part = {"summary_index": 0, "part": _summary("")}
            out += self._item_event("response.reasoning_summary_part.added", part)
        return out

    def _added(self, item: dict[str, Any]) -> bytes:
        return self._event("response.output_item.added", {**self._where(), "item": item})

    def _item_done(self, item: dict[str, Any]) -> bytes:
        """``output_item.done`` for ``item``, put in the output: dumped once for both."""
        dumped = orjson.dumps(item)
        at = orjson.dumps(self._where())
        out = self._event_json("response.output_item.done", at[:-1] + b',"item":' + dumped + b"}")
        self._output.append(dumped)
        return out

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        texts, kind = self._texts, self._open
        self._open, self._texts = None, []
        event = self._item_event  # the item's id and index as opened (nothing appended since)
        if kind == "message":  # its three events, as _item_event writes them, in one join
            seq = self._seq
            self._seq = seq + 3
            at = self._at[1:]
            quoted = _quoted(texts)
            part_json = _PART_TEXT[0] + quoted + _PART_TEXT[1]
            item = b"".join(
                (_ITEM_PART[0], orjson.dumps(self._item_id), _ITEM_PART[1], part_json,
                 _ITEM_PART[2])
            )  # fmt: skip
            self._output.append(item)  # message_item(text, self._item_id) dumped
            return b"".join(
                (
                    _TEXT_DONE, b"%d" % seq, b",", at, b',"content_index":0,"text":',
                    quoted, b',"logprobs":[]', _EVENT_END,
                    _PART_DONE, b"%d" % (seq + 1), b",", at, b',"content_index":0,"part":',
                    part_json, _EVENT_END,
                    _ITEM_DONE, b"%d" % (seq + 2), b",", at, b',"item":', item, _EVENT_END,
                )
            )  # fmt: skip
        text = _joined(texts)
        out = b""
        if self.req.summary:
            done = {"summary_index": 0, "text": text}
            out += event("response.reasoning_summary_text.done", done)
            part = {"summary_index": 0, "part": _summary(text)}
            out += event("response.reasoning_summary_part.done", part)
        item = orjson.dumps(reasoning_item(self.req, text, self._item_id))
        out += self._event_json("response.output_item.done", self._at + b',"item":' + item + b"}")
        self._output.append(item)
        return out

    def _call_events(self, call: Call) -> bytes:
        arguments = "".join(call.fragments)
        item = call_item(self.req, call.id or new_id("call"), call.name, arguments)
        self._item_id = item["id"]
        out = self._added({**item, "arguments": "", "status": "in_progress"})
        for fragment in call.fragments:
            out += self._event(
                "response.function_call_arguments.delta", {**self._where(), "delta": fragment}
            )
        out += self._event(
            "response.function_call_arguments.done",
            {**self._where(), "name": item["name"], "arguments": arguments},
        )
        return out + self._item_done(item)


def _summary(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def _joined(texts: list[str | bytes]) -> str:
    """The text of an item: its parts joined, JSON strings among them decoded in one call.

    JSON strings only (the common case), none holding an escaped quote: every quote in them
    delimits one, so deleting the quotes leaves the texts' JSON bodies joined, one decode."""
    if not texts:
        return ""
    try:
        if type(texts[0]) is str:
            return "".join(texts)  # type: ignore[arg-type]
        joined = b"".join(texts)  # type: ignore[arg-type]
    except TypeError:  # strings and JSON strings mixed
        quoted = [t if type(t) is bytes else orjson.dumps(t) for t in texts]
        return "".join(orjson.loads(b"[" + b",".join(quoted) + b"]"))
    if b"\\" not in joined or b'\\"' not in joined:
        text: str = orjson.loads(b'"' + joined.translate(None, b'"') + b'"')
        return text
    parts: list[str] = orjson.loads(b"[" + b",".join(texts) + b"]")  # type: ignore[arg-type]
    return "".join(parts)


def _quoted(texts: list[str | bytes]) -> bytes:
    """``orjson.dumps(_joined(texts))``, the message's text as its JSON string. JSON strings
    with no escape in any: their bodies joined between two quotes, as they came (decoded
    only to check them as the general path does: orjson writes such a text back byte for
    byte, escaping nothing but quotes, backslashes and control characters, which a JSON
    string's body holds only escaped)."""
    if texts and type(texts[0]) is bytes:
        try:
            joined = b"".join(texts)  # type: ignore[arg-type]
        except TypeError:  # strings and JSON strings mixed
            return orjson.dumps(_joined(texts))
        if b"\\" not in joined:
            quoted = b'"' + joined.translate(None, b'"') + b'"'
            orjson.loads(quoted)  # raises where the general path's decode raises
            return quoted
    return orjson.dumps(_joined(texts))
