"""The router's stream start (``Router._until_commit``): the commit point and its TTFT timer.

A plain chunk with text commits on its bytes (no parse); anything else is parsed as before.
The time to the first token is one loop timer that cancels the task: when it fires the start
fails with a timeout; a cancellation from elsewhere goes on up; once committed it never fires.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.catalogue.loader import default_config_dir, load_config
from gateway.routing import failures as fl
from gateway.routing.router import Router, _opening
from gateway.routing.sse import SSEReader, carries_content, event_json, plain_chunk
from gateway.state.memory import MemoryState

CONFIG = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")


def router() -> Router:
    return Router(CONFIG, {}, MemoryState(CONFIG.gateway.breaker))


def event(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    delta: dict[str, Any] = {"role": "assistant"} if kind == 1 else {}
    if kind != 0:
        delta["content"] = rng.choice(["", "The ", 'say "hi"', "中文 ", None])
    if kind == 2:
        delta["reasoning_content"] = rng.choice(["", "think"])
    elif kind == 3:
        delta["tool_calls"] = [{"index": 0, "function": {"name": "f", "arguments": ""}}]
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
    if kind == 4:
        choice["finish_reason"] = rng.choice(["stop", "sensitive", "network_error", ""])
    obj: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 1}
    obj["model"] = "glm-4.7"
    obj["choices"] = [choice]
    if kind == 5:
        obj["usage"] = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    elif kind == 6:
        obj["error"] = {"message": "boom", "code": "1234"}
    elif kind == 7:
        obj["choices"] = [choice, {"index": 1, "delta": {"content": "x"}, "finish_reason": None}]
    return b"data: " + orjson.dumps(obj)


def test_a_plain_chunk_commits_on_its_bytes_exactly_when_its_parse_would() -> None:
    rng = random.Random(19)
    taken = 0
    seen: set[bool] = set()
    for _ in range(3000):
        ev = event(rng)
        obj = event_json(ev)
        opening = _opening(ev)
        if opening is not None:
            taken += 1
            seen.add(opening)
            assert plain_chunk(ev)
            assert carries_content(obj) is opening and fl.stream_failure(obj) is None, ev
            assert not (isinstance(obj, dict) and "error" in obj)
        elif plain_chunk(ev) and not (obj["choices"][1:] or obj["choices"][0]["delta"]):
            assert not carries_content(obj), ev
        elif plain_chunk(ev) and len(obj["choices"]) == 1:
            assert not carries_content(obj), ev  # a one-choice plain chunk declined: no text
    assert taken > 300 and seen == {True, False}


async def chunks(*parts: bytes, hang: bool = False) -> AsyncIterator[bytes]:
    for p in parts:
        yield p
    if hang:
        await asyncio.sleep(3600)


FIRST = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
ROLE = FIRST + b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
TEXT = FIRST + b'[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}'


async def test_the_stream_commits_at_the_first_text_and_the_timer_is_gone() -> None:
    r = router()
    reader = SSEReader(chunks(ROLE + b"\n\n" + TEXT + b"\n\n", hang=True))
    got = await r._until_commit(reader, time.monotonic() + 0.05)
    assert got == [ROLE, TEXT]
    await asyncio.sleep(0.12)  # past the TTFT: the timer was cancelled with the commit
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_no_first_token_within_the_ttft_is_a_timeout_failure() -> None:
    r = router()
    reader = SSEReader(chunks(ROLE + b"\n\n", hang=True))
    started = time.monotonic()
    got = await r._until_commit(reader, time.monotonic() + 0.05)
    assert isinstance(got, fl.Failure)
    assert got.cls is fl.FailureClass.TIMEOUT and "no first token" in got.message
    assert time.monotonic() - started < 2
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancellation_from_elsewhere_goes_on_up() -> None:
    r = router()
    reader = SSEReader(chunks(ROLE + b"\n\n", hang=True))
    task = asyncio.create_task(r._until_commit(reader, time.monotonic() + 5))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def cancelled_again(first: bytes) -> AsyncIterator[bytes]:
    """Yields ``first``, then hangs; when cancelled (by the TTFT timer) someone else cancels
    the task too before it resumes."""
    yield first
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        raise


async def test_a_cancellation_pending_as_the_timer_fires_still_goes_on_up() -> None:
    r = router()
    reader = SSEReader(cancelled_again(ROLE + b"\n\n"))
    task = asyncio.create_task(r._until_commit(reader, time.monotonic() + 0.03))
    with pytest.raises(asyncio.CancelledError):
        await task


class Arrived:
    """A source that holds ``data`` already (``read_nowait``), then hangs."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.waits = 0

    def read_nowait(self) -> bytes:
        data, self.data = self.data, b""
        return data

    def __aiter__(self) -> Arrived:
        return self

    async def __anext__(self) -> bytes:
        self.waits += 1
        await asyncio.sleep(3600)
        raise StopAsyncIteration


async def test_events_that_arrived_with_the_head_commit_without_a_wait_or_a_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    armed: list[float] = []
    reschedule = asyncio.Timeout.reschedule

    def counted(self: asyncio.Timeout, when: float | None) -> None:
        if when is not None:  # a timer armed (entering the block sets None: none)
            armed.append(when)
        reschedule(self, when)

    monkeypatch.setattr(asyncio.Timeout, "reschedule", counted)
    source = Arrived(ROLE + b"\n\n" + TEXT + b"\n\ndata: [DONE]\n\n")
    reader = SSEReader(source)
    got = await router()._until_commit(reader, time.monotonic() + 0.05)
    assert got == [ROLE, TEXT] and source.waits == 0 and armed == []
    assert reader.pop_buffered() == b"data: [DONE]"  # the rest is the relay's

    source = Arrived(ROLE + b"\n\n")  # the role came with the head, the text does not
    got = await router()._until_commit(SSEReader(source), time.monotonic() + 0.05)
    assert isinstance(got, fl.Failure) and got.cls is fl.FailureClass.TIMEOUT
    assert source.waits == 1 and len(armed) == 1  # armed at the first wait
