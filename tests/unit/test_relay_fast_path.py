"""The relay's byte fast path (plain content chunks not parsed) against full normalisation.

For every shipped deployment whose stream is normalised or relayed raw, random chunks (plain
ones, and ones with reasoning, tool calls, finish reasons, usage, errors) go through
``Relay._quick``: where it answers, the bytes must parse to exactly what the full path
(``Relay.rewrite``) writes; where it declines, the full path runs anyway.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from gateway.catalogue.loader import default_config_dir, load_config
from gateway.catalogue.target import Target
from gateway.edge.relay import Relay
from gateway.routing.sse import SSEReader

CONFIG = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")
TARGETS = sorted(CONFIG.catalogue.targets, key=lambda t: t.id)


def relay(target: Target) -> Relay:
    session: Any = SimpleNamespace(include_usage=False, guard=None, native=None, prelude=[])
    return Relay(session, target, SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]


def chunk(rng: random.Random, target: Target, *, plain: bool = False) -> bytes:
    delta: dict[str, Any] = {"content": rng.choice(["", "The ", 'say "hi"', "中文 ", "a\nb"])}
    if rng.random() < 0.2:  # some hosts name the role in every chunk, not only the first
        delta = {"role": "assistant", **delta}
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
    obj: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 1}
    obj["model"] = rng.choice([target.model, target.variant.id, "other-model"])
    obj["choices"] = [choice]
    extra = 0 if plain else rng.randrange(8)
    if plain:
        obj["model"] = target.model
    if extra == 1:
        delta["reasoning"] = "think"
    elif extra == 2:
        delta["tool_calls"] = [{"function": {"name": "f", "arguments": {"a": 1}}}]
    elif extra == 3:
        choice["finish_reason"] = rng.choice(["stop", "sensitive", "network_error", "length"])
    elif extra == 4:
        obj["usage"] = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    elif extra == 5:
        del obj["object"]
    return b"data: " + orjson.dumps(obj)


def parsed(out: bytes) -> list[Any]:
    return [orjson.loads(e[6:]) for e in out.split(b"\n\n") if e.startswith(b"data: {")]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_the_fast_path_writes_what_normalising_writes(target: Target) -> None:
    rng = random.Random(target.id)
    fast = relay(target).fast  # one stream's: it learns the chunk template as it goes
    hits = 0
    for _ in range(80):
        event = chunk(rng, target, plain=rng.random() < 0.5)
        full = relay(target).rewrite(event)
        got = fast.one(event) if fast is not None else None
        if got is not None:
            hits += 1
            assert parsed(got) == parsed(full), event
    if fast is not None:
        assert hits > 0 and fast._tpl is not None


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_a_run_of_events_relays_as_each_one_would(target: Target) -> None:
    rng = random.Random("run " + target.id)
    fast = relay(target).fast
    if fast is None:
        return
    assert fast.run(b"data: {}\n\n", 0) is None  # no template learned yet
    while fast._tpl is None:  # learnt from the first plain chunk without an escape
        fast.one(chunk(rng, target, plain=True))
    taken = 0
    for _ in range(60):
        plain = rng.random() < 0.6  # content chunks (then maybe a finish chunk), else any mix
        events = [chunk(rng, target, plain=plain) for _ in range(rng.randrange(1, 6))]
        if plain and rng.random() < 0.5:
            events.append(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
        wire = b"".join(e + b"\n\n" for e in events)
        got = fast.run(b"junk" + wire, 4)
        if got is None:
            continue
        out, n, end = got
        taken += 1
        assert end == 4 + len(b"".join(e + b"\n\n" for e in events[:n]))
        full = relay(target)
        assert parsed(out) == [o for e in events[:n] for o in parsed(full.rewrite(e))], wire
        assert all(fast.one(e) is not None for e in events[:n])  # each would pass alone too
    assert taken > 0


def test_a_run_of_texts_is_what_text_gives_each_event() -> None:
    from gateway.edge.fastpath import BytePath

    rng = random.Random("texts")
    target = TARGETS[0]
    texts = BytePath(None, ())
    assert texts.text_run(b"data: {}\n\n", 0) is None  # no template learned yet
    taken = 0
    for _ in range(80):
        plain = rng.random() < 0.7
        events = [chunk(rng, target, plain=plain) for _ in range(rng.randrange(1, 6))]
        if plain and rng.random() < 0.5:
            events.append(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
        wire = b"".join(e + b"\n\n" for e in events)
        one_by_one = BytePath(None, ())
        one_by_one._tpl = texts._tpl  # the same template, checked event by event
        got = texts.text_run(b"junk" + wire, 4)
        if got is None:
            texts.text(events[0])  # learn, as the relay does on the full path
            continue
        quoted, n, end = got
        taken += 1
        assert end == 4 + len(b"".join(e + b"\n\n" for e in events[:n]))
        assert quoted == [one_by_one.text(e) for e in events[:n]], wire
        assert [orjson.loads(q) for q in quoted] == [
            orjson.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:n]
        ]
    assert taken > 0


def test_a_run_of_texts_with_a_nul_or_a_backslash_is_never_split_wrong() -> None:
    from gateway.edge.fastpath import BytePath

    fast = BytePath(None, ())
    pre = b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"'
    suf = b'"},"finish_reason":null}]}'
    assert fast.text(pre + b"hi" + suf) == b'"hi"'
    for odd in (b"a\x00b", b"\x00", b"a\\\x00", b"\\u0000", b"x\\\\"):
        events = [pre + t + suf for t in (b"one", odd, b"two")]
        got = fast.text_run(b"".join(e + b"\n\n" for e in events), 0)
        want = [fast.text(e) for e in events]
        assert got is None or (got[0] == want[: got[1]] and None not in want[: got[1]]), odd
        run = fast.run(b"".join(e + b"\n\n" for e in events), 0)
        assert run is None or run[0] == b"".join(fast.one(e) or b"!" for e in events[: run[1]])


async def test_events_sliced_at_an_offset_survive_any_chunking() -> None:
    events = [b'data: {"n":%d}' % i for i in range(30)] + [b": ping", b"data: [DONE]"]
    wire = b"".join(e + b"\n\n" for e in events)
    rng = random.Random(3)
    cuts = sorted(rng.sample(range(1, len(wire)), 25))
    parts = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]

    async def chunks() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    reader = SSEReader(chunks())
    got = []
    while (e := await reader.next_event()) is not None:
        got.append(e)
        while (more := reader.pop_buffered()) is not None:
            got.append(more)
    assert got == events


async def test_a_run_consumes_exactly_what_take_accepts() -> None:
    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        yield data

    wire = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: {"c":3}\n\ndata: [DONE]\n\ndata: {"d"'
    reader = SSEReader(chunks(wire))
    assert await reader.next_event() == b'data: {"a":1}'

    def take(buf: bytes, start: int) -> tuple[bytes, int, int]:
        end = buf.index(b"data: [DONE]")
        return b"<" + buf[start:end] + b">", 2, end

    assert reader.pop_run(take) == (b'<data: {"b":2}\n\ndata: {"c":3}\n\n>', 2)
    assert reader.pop_buffered() == b"data: [DONE]"
    assert reader.pop_buffered() is None
    reader = SSEReader(chunks(wire))
    await reader.next_event()
    assert reader.pop_run(lambda buf, start: None) is None
    assert reader.pop_buffered() == b'data: {"b":2}'  # nothing was consumed


@pytest.mark.parametrize("stops", [None, ["END"]])
def test_messages_events_from_plain_text_are_those_from_the_chunk(stops: list[str] | None) -> None:
    from gateway.frontends.messages_stream import MessagesStream

    rng = random.Random(5)
    target = next(t for t in TARGETS if relay(t).fast is not None)
    fast = relay(target).fast
    assert fast is not None
    by_obj = MessagesStream("claude-x", thinking_key=b"k" * 32, stop_sequences=stops)
    by_text = MessagesStream("claude-x", thinking_key=b"k" * 32, stop_sequences=stops)
    texts = 0
    for _ in range(60):
        event = chunk(rng, target, plain=rng.random() < 0.7)
        obj = orjson.loads(event[6:])
        quoted = fast.text(event)
        want = by_obj.feed(obj)
        if quoted is None:
            got = by_text.feed(orjson.loads(event[6:]))
        else:
            texts += 1
            assert orjson.loads(quoted) == obj["choices"][0]["delta"]["content"]
            got = by_text.text(quoted)
        assert parsed_events(got) == parsed_events(want)
    assert texts > 0
    assert parsed_events(by_text.end()) == parsed_events(by_obj.end())


def parsed_events(out: bytes) -> list[Any]:
    return [
        orjson.loads(line[6:])
        for ev in out.split(b"\n\n")
        for line in ev.split(b"\n")
        if line.startswith(b"data: ")
    ]


def test_a_run_declines_events_that_only_look_like_the_template() -> None:
    from gateway.edge.fastpath import BytePath

    fast = BytePath(None, ())
    plain = (
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
    )
    assert fast.one(plain) is not None and fast._tpl is not None
    pre, suf = fast._tpl.pre, fast._tpl.suf
    for odd in (
        pre + suf[1:],  # prefix and suffix overlapping on the quote
        pre + b'a","x":"b' + suf,  # another field smuggled in
        pre + b"ends\\" + suf,  # an escaped quote, not the string's end
        pre + suf + b"\ndata: " + pre + b"x" + suf,  # two data lines
        b"",
        b'data: {"x":1}',  # shorter than prefix and suffix together
        pre[:-1] + suf,  # the prefix cut short
        pre + b"x" + suf[:-1] + b"]}",  # another suffix
        pre + b"x" + suf + b"\n\n" + pre + b"y" + suf + b"\n" + pre,  # a stray prefix
    ):
        wire = plain + b"\n\n" + odd + b"\n\n" + plain + b"\n\n"
        for take in (fast.run, fast.text_run):
            got = take(wire, 0)
            assert got is None or got[1] == 1, odd  # never past the odd event
    got = fast.run(plain + b"\n\n" + plain + b"\n\n", 0)
    assert got == (plain + b"\n\n" + plain + b"\n\n", 2, len(plain) * 2 + 4)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_the_prelude_relays_plain_chunks_as_rewriting_would(target: Target) -> None:
    rng = random.Random("prelude " + target.id)
    events = [chunk(rng, target, plain=rng.random() < 0.7) for _ in range(4)]
    r = relay(target)
    r.session.prelude = events
    out: Any = SimpleNamespace(relay=lambda b: b)
    got = r.prelude(out)
    full = relay(target)
    assert parsed(got) == [o for e in events for o in parsed(full.rewrite(e))]


async def test_the_stream_guard_arms_its_timer_only_when_the_relay_waits() -> None:
    from gateway.edge.stream_guard import StreamGuard
    from gateway.observability.timing import StageTimes

    target = next(t for t in TARGETS if relay(t).fast is not None)
    wire = b"".join(
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"%d "},"finish_reason":null}]}\n\n' % i
        for i in range(5)
    )
    wire += b"data: [DONE]\n\n"

    class Counting(StreamGuard):
        arms = 0

        def _arm(self) -> None:
            Counting.arms += 1
            super()._arm()

    async def run(parts: list[bytes]) -> bytes:
        async def chunks() -> AsyncIterator[bytes]:
            for p in parts:
                await asyncio.sleep(0)
                yield p

        reader = SSEReader(chunks())
        first = await reader.next_event()
        assert first is not None
        session: Any = SimpleNamespace(
            include_usage=False, guard=None, native=None, prelude=[first], reader=reader
        )
        guard = Counting(time.monotonic() + 60, 30.0)
        r = Relay(session, target, StageTimes(), guard)
        sent: list[bytes] = []

        async def out(parts: list[bytes], objs: Any) -> None:
            sent.extend(parts)

        async def opening() -> None:
            sent.append(b"")

        assert await r.pump(out, opening) is None
        assert guard._handle is None and guard._task is None  # stopped
        return b"".join(sent) + b"".join(r.held[0] if r.held else [])

    whole = await run([wire])  # the stream arrived whole: relayed without a timer
    assert Counting.arms == 0 and whole.endswith(b"data: [DONE]\n\n")
    split = wire.index(b"\n\n", 300) + 2
    assert await run([wire[:split], wire[split:]]) == whole  # a wait: the timer is armed once
    assert Counting.arms == 1


async def test_a_finish_chunk_with_usage_reaches_an_object_front_end_as_objects() -> None:
    """A host that puts usage on its finish chunk, a client that asked for usage (Messages and
    Responses always do): the relay hands the front-end both objects (the finish chunk, then
    the usage chunk), as parsing the two events it would otherwise write gives."""
    from gateway.edge.stream_guard import StreamGuard
    from gateway.frontends.messages_frontend import _MessagesOut
    from gateway.frontends.messages_stream import MessagesStream
    from gateway.observability.timing import StageTimes

    target = next(t for t in TARGETS if t.provider == "zai" and not relay(t).raw)
    head = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    wire = b"".join(
        head + b'"choices":[{"index":0,"delta":{"content":"%d "},"finish_reason":null}]}\n\n' % i
        for i in range(4)
    )
    wire += head + b'"choices":[{"index":0,"delta":{},"finish_reason":"length"}],'
    wire += b'"usage":{"prompt_tokens":17,"completion_tokens":48,"total_tokens":65}}\n\n'
    wire += b"data: [DONE]\n\n"

    async def run(objects: bool) -> tuple[bytes, list[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield wire

        reader = SSEReader(chunks())
        first = await reader.next_event()
        assert first is not None
        session: Any = SimpleNamespace(
            include_usage=True, guard=None, native=None, prelude=[first], reader=reader
        )
        r = Relay(session, target, StageTimes(), StreamGuard(time.monotonic() + 60, 30.0))
        parsed_back: list[bytes] = []

        class Watched(_MessagesOut):
            __slots__ = ()

            def relay(self, chunk: bytes) -> bytes:
                parsed_back.append(chunk)
                return super().relay(chunk)

        out = Watched(MessagesStream("claude-x", thinking_key=b"k" * 32))
        if objects:
            r.take_objects()

        sent = await relay_through(r, out, r.prelude(out))
        assert r.usage == {"prompt_tokens": 17, "completion_tokens": 48, "total_tokens": 65}
        return sent, parsed_back

    by_bytes, _ = await run(False)
    by_objects, parsed_back = await run(True)
    assert parsed_events(by_objects) == parsed_events(by_bytes)
    assert b'"output_tokens":48' in by_objects
    assert not any(b"usage" in chunk for chunk in parsed_back)  # nothing encoded, parsed back


async def relay_through(r: Relay, out: Any, opened: bytes) -> bytes:
    """What a client gets: ``opened`` (the stream's opening), then the committed stream pumped
    through the front-end's ``out`` as the edge does (objects when the relay hands them)."""

    def render(parts: list[bytes], objs: list[Any] | None) -> bytes:
        return out.relay(b"".join(parts)) if objs is None else out.relay_parts(parts, objs)

    sent = [opened]

    async def forward(parts: list[bytes], objs: list[Any] | None) -> None:
        sent.append(render(parts, objs))

    async def opening() -> None:
        return None

    assert await r.pump(forward, opening) is None
    if r.held is not None:
        sent.append(render(*r.held))
    return b"".join(sent)


@pytest.mark.parametrize("target", TARGETS[:12], ids=lambda t: t.id)
def test_the_first_chunk_teaches_the_template_of_those_after_it(target: Target) -> None:
    """A stream's first chunk names the role; the template learnt from it fits the chunks
    after it (no role), so they need no checks of their own, and give what rewriting gives."""
    fast = relay(target).fast
    if fast is None:
        return
    head = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"%s",'
    head %= target.model.encode()
    first = head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    first += b'"finish_reason":null}]}'
    after = head + b'"choices":[{"index":0,"delta":{"content":"The "},"finish_reason":null}]}'
    assert parsed(fast.one(first) or b"") == parsed(relay(target).rewrite(first))
    assert fast._tpl is not None and fast._tpl.text_of(after) == b"The "
    assert parsed(fast.one(after) or b"") == parsed(relay(target).rewrite(after))
    assert fast._tpl.text_of(first) is None  # the role chunk itself is not the template's


@pytest.mark.parametrize("api", ["messages", "responses"])
@pytest.mark.parametrize("seed", range(6))
async def test_an_object_front_end_writes_the_same_with_plain_chunks_as_texts(
    api: str, seed: int
) -> None:
    """Prelude and relay with plain chunks handed over as their texts (the role chunk and the
    first content token before the commit point included) against every chunk handed over as
    its object: the same bytes to the client."""
    from gateway.edge.stream_guard import StreamGuard
    from gateway.frontends.messages_frontend import _MessagesOut
    from gateway.frontends.messages_stream import MessagesStream
    from gateway.frontends.responses import to_chat
    from gateway.frontends.responses_frontend import _ResponsesOut
    from gateway.frontends.responses_stream import ResponsesStream
    from gateway.observability.timing import StageTimes

    rng = random.Random(seed)
    target = next(t for t in TARGETS if t.provider == "zai" and not relay(t).raw)
    head = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'

    def delta(content: str, role: bool) -> bytes:
        d: dict[str, Any] = {"role": "assistant"} if role else {}
        d["content"] = content
        choice = {"index": 0, "delta": d, "finish_reason": None}
        return head + b'"choices":' + orjson.dumps([choice]) + b"}\n\n"

    words = ["The ", 'say "hi" ', "中文 ", "a\nb ", "", "x\\y "]
    wire = delta("", True) + delta(rng.choice(words[:3]), rng.random() < 0.5)
    for _ in range(rng.randrange(1, 8)):
        wire += delta(rng.choice(words), rng.random() < 0.2)
    wire += head + b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    wire += b"data: [DONE]\n\n"
    cut = rng.randrange(1, len(wire))

    async def run(as_texts: bool) -> bytes:
        async def chunks() -> AsyncIterator[bytes]:
            yield wire[:cut]
            yield wire[cut:]

        reader = SSEReader(chunks())
        prelude = []
        for _ in range(2):  # the role chunk and the first content token
            event = await reader.next_event()
            assert event is not None
            prelude.append(event)
        session: Any = SimpleNamespace(
            include_usage=True, guard=None, native=None, prelude=prelude, reader=reader
        )
        r = Relay(session, target, StageTimes(), StreamGuard(time.monotonic() + 60, 30.0))
        r.take_objects()
        if not as_texts:
            r.texts = None
        out: Any
        if api == "messages":
            out = _MessagesOut(MessagesStream("claude-x", thinking_key=b"k" * 32))
        else:
            req = to_chat({"model": "m", "input": "hi", "stream": True}, key=b"k")
            out = _ResponsesOut(ResponsesStream(req))
        return await relay_through(r, out, out.begin() + r.prelude(out))

    by_texts, by_objects = await run(True), await run(False)
    assert b"text_delta" in by_texts or b"output_text.delta" in by_texts
    assert _unrandom(by_texts) == _unrandom(by_objects)


def _unrandom(out: bytes) -> bytes:
    """A stream with its random ids and clock read replaced by fixed ones."""
    out = re.sub(rb"\b(msg|resp|rs|fc|toolu)_[0-9a-zA-Z]+", rb"\1_ID", out)
    return re.sub(rb'"created_at":\d+', b'"created_at":0', out)
