"""The SSE reader: whole events from arbitrary chunking, and broken data events refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.routing.sse import MalformedEvent, SSEReader


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def events(*parts: bytes) -> list[bytes]:
    reader = SSEReader(chunks(*parts))
    out = []
    while (event := await reader.next_event()) is not None:
        out.append(event)
    return out


async def test_events_are_whole_whatever_the_chunking() -> None:
    got = await events(
        b'data: {"a"', b":1}\r\n\r\n: ping\n\nevent: x\ndata: {}\n\ndata: [DO", b"NE]\n\n"
    )
    assert got == [b'data: {"a":1}', b": ping", b"event: x\ndata: {}", b"data: [DONE]"]


async def test_a_trailing_partial_event_is_dropped() -> None:
    assert await events(b'data: {"a":1}\n\ndata: {"b"') == [b'data: {"a":1}']


@pytest.mark.parametrize(
    "bad",
    [b'data: {"id": "x", "choices": [{"delta": {"content": "unfin', b"data: <html>", b"data: oops"],
)
async def test_a_data_event_that_cannot_be_json_breaks_the_stream(bad: bytes) -> None:
    reader = SSEReader(chunks(b'data: {"a":1}\n\n' + bad + b"\n\ndata: [DONE]\n\n"))
    assert await reader.next_event() == b'data: {"a":1}'
    with pytest.raises(MalformedEvent, match="malformed SSE event"):
        await reader.next_event()
