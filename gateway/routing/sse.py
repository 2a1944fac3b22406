"""Server-sent-event framing for relayed streams: split bytes into events, cheaply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import orjson

from gateway.providers.base import UpstreamConnectionError

DONE = b"data: [DONE]"
T = TypeVar("T")


class MalformedEvent(UpstreamConnectionError):
    """An upstream ``data:`` event that is neither a JSON object nor ``[DONE]``: cut mid-way,
    an HTML page, plain text. The stream is broken; relaying it would pass garbage as success."""


class SSEReader:
    """Yields whole SSE events (without the blank-line terminator) from raw upstream chunks.

    Raises :class:`MalformedEvent` for an event whose data cannot be a JSON object or
    ``[DONE]`` (checked on its first and last bytes only, not parsed).
    """

    __slots__ = ("_buf", "_chunks", "_pos", "ended")

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        """Where the next event starts in ``_buf`` (events are sliced out, never the rest)."""
        self.ended = False

    def pop_buffered(self) -> bytes | None:
        """The next whole event already received, or None; never waits for the network."""
        buf = self._buf
        while True:
            start = self._pos
            idx = buf.find(b"\n\n", start)
            if idx < 0:
                return None
            self._pos = idx + 2
            if buf.startswith(b"data: {", start) and buf[idx - 1] == 0x7D:  # "}": whole JSON
                return buf[start:idx]
            event = buf[start:idx]
            if event.strip():
                if _malformed(event):
                    raise MalformedEvent(f"upstream sent a malformed SSE event: {event[:80]!r}")
                return event

    def pop_run(
        self, take: Callable[[bytes, int], tuple[T, int, int] | None]
    ) -> tuple[T, int] | None:
        """Events already received taken at once: ``take(buffer, start)`` gives the bytes to
        relay for the whole events from ``start`` on that it accepts, how many, and where they
        end (just past a blank line); those are consumed: (bytes, count). None: nothing taken."""
        got = take(self._buf, self._pos)
        if got is None:
            return None
        out, n, self._pos = got
        return out, n

    async def next_event(self) -> bytes | None:
        """The next event, or None when the upstream closed (a trailing partial is dropped)."""
        while True:
            event = self.pop_buffered()
            if event is not None:
                return event
            try:
                data = await anext(self._chunks)
            except StopAsyncIteration:
                self.ended = True
                return None
            self._feed(data)

    def take_arrived(self) -> None:
        """Buffer what the source has already received, without waiting, when it can say
        (``read_nowait``: the bytes it holds, ``b""`` for none); then :meth:`pop_buffered`
        sees them. A source without it is left alone."""
        read = getattr(self._chunks, "read_nowait", None)
        if read is not None:
            data = read()
            if data:
                self._feed(data)

    def _feed(self, data: bytes) -> None:
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        self._buf = self._buf[self._pos :] + data if self._pos else self._buf + data
        self._pos = 0


def _malformed(event: bytes) -> bool:
    at = event.find(b"data:")
    if at < 0:
        return False  # a comment, or event:/id:/retry: lines only
    head = event[at + 5 : at + 16].lstrip()[:1]
    tail = event.rstrip()
    if head == b"{":
        return not tail.endswith(b"}")
    return not (head == b"" or tail.endswith(b"[DONE]"))


def plain_chunk(event: bytes) -> bool:
    """A one-line OpenAI content chunk that no dialect rule changes but ``model``: no usage,
    error, reasoning, tool calls or finish reason (so nothing to normalise, meter or classify;
    GLM's ``network_error`` comes as a finish reason or inside an error). Checked on bytes,
    one substring search each (a regex alternation is slower); a false "no" only sends the
    event down the parsing path."""
    return (
        event.startswith(b"data: {")
        and b'"finish_reason":null' in event
        and b'"object":"chat.completion.chunk"' in event
        and b"\n" not in event
        and b'"usage"' not in event
        and b'"error"' not in event
        and b"reasoning" not in event
        and b"tool_calls" not in event
        and b'"finish_reason":"' not in event
        and b'"finish_reason": "' not in event
    )


def event_json(event: bytes) -> Any:
    """The JSON payload of a ``data:`` event, or None (comments, [DONE], non-JSON)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                try:
                    return orjson.loads(payload)
                except orjson.JSONDecodeError:
                    return None
    return None


def is_done(event: bytes) -> bool:
    return event.startswith(DONE)


def first_choice(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, dict):
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            return choices[0]
    return None


def carries_content(obj: Any) -> bool:
    """True when a chunk carries answer bytes (the commit point) or ends the answer."""
    choice = first_choice(obj)
    if choice is None:
        return False
    if choice.get("finish_reason"):
        return True
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return False
    return bool(
        delta.get("content")
        or delta.get("reasoning_content")
        or delta.get("reasoning")
        or delta.get("tool_calls")
    )


def error_event(body: bytes) -> bytes:
    return b"data: " + body + b"\n\n"
