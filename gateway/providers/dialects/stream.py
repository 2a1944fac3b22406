"""Per-stream rewriting: one upstream's chunks turned into the stream the client asked for.

A stream is relayed as raw bytes (only ``model`` rewritten) when its dialect's chunks are already
OpenAI chunks, the variant writes no tags into content and no structured output is checked;
then only events that may matter (usage, errors, failing finish reasons) are parsed. Otherwise
each chunk is parsed and normalised here.

Usage: the gateway asks every upstream for usage (it meters every stream). The client gets a
final ``choices: []`` usage chunk exactly when it asked (``stream_options.include_usage``), also
from hosts that put usage on the finish chunk (Z.ai / BigModel), and none otherwise.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.catalogue.target import Target
from gateway.providers.dialects.response import normalise_chunk
from gateway.providers.dialects.spec import DIALECTS, TAGGED_CONTENT_VARIANTS
from gateway.providers.dialects.tags import TagSplitter

_TOP = ("id", "object", "created", "model")


class StreamNormaliser:
    """Rewrites the chunks of one committed stream for one target."""

    __slots__ = (
        "_content", "_tags", "_top", "encode", "finish_reason", "include_usage", "raw", "target",
        "usage_chunk",
    )  # fmt: skip

    def __init__(self, target: Target, *, include_usage: bool, collect_content: bool) -> None:
        self.target = target
        self.include_usage = include_usage
        # (tags_in_content and spec_for, without the two calls per stream)
        self._tags = TagSplitter() if target.variant_id in TAGGED_CONTENT_VARIANTS else None
        self._content: list[str] | None = [] if collect_content else None
        self._top: dict[str, Any] = {}
        self.finish_reason: str | None = None
        raw_chunks = DIALECTS[target.dialect].raw_chunks
        self.raw = raw_chunks and self._tags is None and not collect_content
        """Byte relay: parse only events :meth:`keep_raw` must see."""
        self.encode = True
        """False when the caller reads the normalised objects, not the bytes: :meth:`chunk`
        then returns :data:`ONE_EVENT` for a chunk that is one event, :data:`TWO_EVENTS` for
        one that is followed by its usage chunk (:attr:`usage_chunk`); nothing is encoded."""
        self.usage_chunk: dict[str, Any] | None = None
        """Not encoding: the usage chunk the last :data:`TWO_EVENTS` stands for second."""

    @property
    def passes_plain_chunks(self) -> bool:
        """True when a chunk with nothing to normalise but ``model`` (no reasoning, tool
        calls, finish reason, usage) comes out of :meth:`chunk` as it went in: no tags to
        split, no content collected, bytes wanted (the relay then skips parsing it)."""
        return self._tags is None and self._content is None and self.encode

    def keep_raw(self, obj: Any) -> bool:
        """Raw relay: False for a usage chunk the client did not ask for (the gateway did)."""
        return self.include_usage or not _usage_only(obj)

    def chunk(self, obj: dict[str, Any]) -> bytes:
        """The SSE bytes the client gets for one parsed upstream chunk (zero to two events)."""
        normalise_chunk(obj, self.target)
        if obj.get("choices") == [] and isinstance(obj.get("usage"), dict):  # (_usage_only)
            return _sse(obj) if self.include_usage else b""
        if self._tags is not None:  # only close() reads it: a held-back tail needs the head
            self._top = _top(obj)
        choice = _first(obj)
        delta = choice.get("delta") if choice else None
        if choice is not None and isinstance(delta, dict):
            fr = choice.get("finish_reason")
            if isinstance(fr, str):
                self.finish_reason = fr
            if self._tags is not None:
                self._split_tags(delta, final=isinstance(fr, str))
            if self._content is not None and choice.get("index", 0) == 0:
                text = delta.get("content")
                if isinstance(text, str):
                    self._content.append(text)
        moved = _finish_usage(obj, choice)
        if moved is None or not self.include_usage:
            return _sse(obj) if self.encode else ONE_EVENT
        usage = {**_top(obj), "choices": [], "usage": moved}
        if not self.encode:
            self.usage_chunk = usage
            return TWO_EVENTS
        return _sse(obj) + _sse(usage)

    def close(self) -> bytes:
        """At ``[DONE]``: text still held back by the tag splitter, as one last delta."""
        if self._tags is None:
            return b""
        reasoning, content = self._tags.flush()
        if not (reasoning or content):
            return b""
        delta = _delta(reasoning, content)
        if self._content is not None:
            self._content.append(content)
        return _sse({**self._top, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})

    def content(self) -> str:
        """The answer text the client received (only when built with ``collect_content``)."""
        return "".join(self._content or ())

    def _split_tags(self, delta: dict[str, Any], *, final: bool) -> None:
        if self._tags is None:
            return
        text = delta.get("content")
        reasoning, content = self._tags.feed(text) if isinstance(text, str) else ("", "")
        if final:
            r, c = self._tags.flush()
            reasoning, content = reasoning + r, content + c
        if "content" in delta or content:
            delta["content"] = content
        if reasoning:
            before = delta.get("reasoning_content")
            delta["reasoning_content"] = (before if isinstance(before, str) else "") + reasoning


def _top(obj: dict[str, Any]) -> dict[str, Any]:
    """The head fields of a chunk, for a chunk the stream adds after it."""
    return {k: obj[k] for k in _TOP if k in obj}


def _finish_usage(obj: dict[str, Any], choice: dict[str, Any] | None) -> dict[str, Any] | None:
    """Pop usage riding on the finish chunk (Z.ai): it goes in its own final chunk, if asked.
    ``choice``: the chunk's first choice (:func:`_first`)."""
    usage = obj.get("usage")
    if not isinstance(usage, dict) or choice is None or not choice.get("finish_reason"):
        return None
    del obj["usage"]
    return usage


def _first(obj: dict[str, Any]) -> dict[str, Any] | None:
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _usage_only(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


def _delta(reasoning: str, content: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if reasoning:
        out["reasoning_content"] = reasoning
    if content:
        out["content"] = content
    return out


ONE_EVENT = b"data: {}\n\n"
"""What :meth:`StreamNormaliser.chunk` returns, not encoding, for one event (its object is the
chunk it was given, normalised in place)."""
TWO_EVENTS = ONE_EVENT + ONE_EVENT
"""... for two events: the chunk given (usage moved off it), then
:attr:`StreamNormaliser.usage_chunk` (a client that asked for usage, a host that put it on the
finish chunk)."""


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
