"""A run of plain chunks handed over at once (``PlainTexts``, gateway/edge/fastpath.py) writes
what the same chunks handed over one by one (``PlainText``) write, on every front-end that takes
objects, with and without stop sequences (Messages) and before and after the item is open."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.edge.fastpath import PlainText, PlainTexts
from gateway.frontends.messages_stream import MessagesStream
from gateway.frontends.responses import to_chat
from gateway.frontends.responses_stream import ResponsesStream

QUOTED = [b'"Hel"', b'""', b'"lo \\"you\\""', b'"a\\nb"', b'"\\u4e2d"', b'"end\\\\"']
FIRST: dict[str, Any] = {
    "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi "},
                 "finish_reason": None}],
}  # fmt: skip


def _same(raw: bytes) -> bytes:
    """Random ids and the clock's second left out."""
    raw = re.sub(rb"(resp|msg|rs)_[A-Za-z0-9]+", b"ID", raw)
    return re.sub(rb'"created_at":\d+', b'"created_at":0', raw)


def responses(batched: bool, opened: bool) -> bytes:
    s = ResponsesStream(to_chat({"model": "coding", "input": "hi", "stream": True}, key=b"k"))
    out = s.start() + (s.feed(FIRST) if opened else b"")
    out += s.texts(QUOTED) if batched else b"".join(s.text(q) for q in QUOTED)
    return _same(out + s.end())


def messages(batched: bool, opened: bool, stops: list[str] | None) -> bytes:
    s = MessagesStream("claude-x", thinking_key=b"k", stop_sequences=stops)
    out = s.start(12) + (s.feed(FIRST) if opened else b"")
    out += s.texts(QUOTED) if batched else b"".join(s.text(q) for q in QUOTED)
    return _same(out + s.end())


@pytest.mark.parametrize("opened", [True, False])
def test_responses_writes_the_same_for_a_run(opened: bool) -> None:
    assert responses(True, opened) == responses(False, opened)
    assert b'"text":"' + (b"Hi " if opened else b"") + b'Hello \\"you\\"a\\nb' in responses(
        True, opened
    )


@pytest.mark.parametrize("stops", [None, ["lo"]])
@pytest.mark.parametrize("opened", [True, False])
def test_messages_writes_the_same_for_a_run(opened: bool, stops: list[str] | None) -> None:
    assert messages(True, opened, stops) == messages(False, opened, stops)


def test_the_objects_carry_their_texts() -> None:
    assert PlainTexts(QUOTED).quoted == [PlainText(q).quoted for q in QUOTED]
