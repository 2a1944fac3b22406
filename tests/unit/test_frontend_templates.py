"""The translated streams' byte templates write exactly what the general path writes.

Messages ``content_block_delta`` text events, Responses ``response.output_text.delta`` events
and every other Responses event are written from prebuilt byte pieces (a head per kind or per
item, a cached sequence number, the text's JSON spliced in), not built as dicts and dumped.
Each is checked here against the dict form dumped by orjson (the general path), for any text,
one by one (``text``), as a run (``texts``) and through ``feed``; so the templates cannot drift
from the dicts. An item's text is decoded from its JSON strings at once (``_joined``): checked
against decoding them one by one, with escapes of every kind.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.frontends import responses_stream
from gateway.frontends.messages_stream import MessagesStream, event
from gateway.frontends.responses import to_chat
from gateway.frontends.responses_answer import message_item, output_text
from gateway.frontends.responses_stream import ResponsesStream, _joined, _seq_deltas

TEXTS = st.lists(st.text(max_size=8), max_size=12)
FIRST = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}


def chunk(text: str) -> dict[str, Any]:
    return {"id": "c", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def frames(raw: bytes) -> list[tuple[str, bytes]]:
    out = []
    for frame in raw.split(b"\n\n")[:-1]:
        head, data = frame.split(b"\n", 1)
        out.append((head.removeprefix(b"event: ").decode(), data.removeprefix(b"data: ")))
    assert b"".join(b"event: %s\ndata: %s\n\n" % (k.encode(), d) for k, d in out) == raw
    return out


AT = ["type", "sequence_number", "item_id", "output_index"]
KEYS = {
    "response.created": ["type", "sequence_number", "response"],
    "response.in_progress": ["type", "sequence_number", "response"],
    "response.output_item.added": [*AT, "item"],
    "response.content_part.added": [*AT, "content_index", "part"],
    "response.output_text.delta": [
        "type", "item_id", "output_index", "content_index", "logprobs", "sequence_number", "delta"
    ],
    "response.output_text.done": [*AT, "content_index", "text", "logprobs"],
    "response.content_part.done": [*AT, "content_index", "part"],
    "response.output_item.done": [*AT, "item"],
    "response.completed": ["type", "sequence_number", "response"],
}  # fmt: skip


def responses_stream_of(texts: list[str], how: str) -> bytes:
    """One stream over ``texts``: fed as chunks (``feed``), or after a first chunk as JSON
    strings one by one (``text``) or as one run (``texts``); ids made fixed."""
    ids = itertools.count()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(responses_stream, "new_id", lambda prefix: f"{prefix}_{next(ids)}")
        mp.setattr(responses_stream, "new_ids", lambda a, b: (f"{a}_x", f"{b}_{next(ids)}"))
        s = ResponsesStream(to_chat({"model": "m", "input": "hi", "stream": True}, key=b"k"))
        out = s.start() + s.feed(FIRST) + s.feed(chunk("Hi "))
        if how == "feed":
            out += b"".join(s.feed(chunk(t)) for t in texts)
        elif how == "text":
            out += b"".join(s.text(orjson.dumps(t)) for t in texts)
        else:
            out += s.texts([orjson.dumps(t) for t in texts])
        return re.sub(rb'"(created_at|completed_at)":\d+', b'"\\1":0', out + s.end())


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_responses_events_are_the_dicts_dumped(texts: list[str]) -> None:
    raws = {how: responses_stream_of(texts, how) for how in ("feed", "text", "texts")}
    assert raws["feed"] == raws["text"] == raws["texts"]
    for seq, (kind, data) in enumerate(frames(raws["texts"])):
        obj = orjson.loads(data)
        assert obj["type"] == kind and obj["sequence_number"] == seq
        if kind == "response.output_text.delta":  # its prefix built once per item
            rest = {k: obj[k] for k in ("item_id", "output_index", "content_index", "logprobs")}
            general = {"type": kind, **rest, "sequence_number": obj["sequence_number"],
                       "delta": obj["delta"]}  # fmt: skip
        else:  # ResponsesStream._event's dict: type, sequence_number, then the event's data
            general = {"type": kind, "sequence_number": obj["sequence_number"]}
            general.update({k: v for k, v in obj.items() if k not in general})
        assert data == orjson.dumps(general)
        assert list(obj) == KEYS[kind]  # what the dicts ({**where, ...}) gave, in order
        if kind == "response.output_item.added":  # the open item around its id
            opened = {**message_item("", obj["item_id"], "in_progress"), "content": []}
            assert data.endswith(b',"item":' + orjson.dumps(opened) + b"}")
        full = "Hi " + "".join(texts)  # the closed item and its part around the text
        if kind == "response.content_part.done":
            assert data.endswith(b',"part":' + orjson.dumps(output_text(full)) + b"}")
        if kind == "response.output_item.done":
            item = message_item(full, obj["item_id"])
            assert data.endswith(b',"item":' + orjson.dumps(item) + b"}")
    completed = orjson.loads(frames(raws["texts"])[-1][1])
    assert completed["response"]["output"][0]["content"][0]["text"] == "Hi " + "".join(texts)


def test_sequence_numbers_past_the_cache() -> None:
    assert _seq_deltas(3, 2) == [b'3,"delta":', b'4,"delta":']
    big = responses_stream._SEQ_CACHED
    assert _seq_deltas(big - 1, 3) == [b'%d,"delta":' % n for n in range(big - 1, big + 2)]
    assert len(responses_stream._SEQ) <= big


def messages_stream_of(texts: list[str], how: str) -> bytes:
    s = MessagesStream("claude-x", thinking_key=b"k")
    s.id = "msg_fixed"
    out = s.start(3) + s.feed(FIRST) + s.feed(chunk("Hi "))
    if how == "feed":
        out += b"".join(s.feed(chunk(t)) for t in texts)
    elif how == "text":
        out += b"".join(s.text(orjson.dumps(t)) for t in texts)
    else:
        out += s.texts([orjson.dumps(t) for t in texts])
    return out + s.end()


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_messages_text_deltas_are_the_dicts_dumped(texts: list[str]) -> None:
    raws = {how: messages_stream_of(texts, how) for how in ("feed", "text", "texts")}
    assert raws["feed"] == raws["text"] == raws["texts"]
    deltas = [d for k, d in frames(raws["texts"]) if k == "content_block_delta"]
    assert len(deltas) == 1 + sum(1 for t in texts if t)
    for data, text in zip(deltas, ["Hi ", *[t for t in texts if t]], strict=True):
        general = {"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": text}}  # fmt: skip
        assert event("content_block_delta", general) == (
            b"event: content_block_delta\ndata: " + data + b"\n\n"
        )


QUOTE = st.sampled_from(
    [
        lambda t: t,  # a string (the general path's)
        orjson.dumps,  # a JSON string as orjson writes it
        lambda t: json.dumps(t).encode(),  # \uXXXX escapes, \" and \\, as hosts may write them
    ]
)


@given(st.lists(st.tuples(st.text(max_size=6), QUOTE), max_size=10))
def test_an_items_text_is_its_parts_decoded(parts: list[tuple[str, Any]]) -> None:
    texts = [quote(t) for t, quote in parts]
    assert _joined(texts) == "".join(t for t, _ in parts)


@pytest.mark.parametrize(
    "texts",
    [
        [b'"a\\\\"', b'"b"'],  # a text ending in a backslash
        [b'"say \\"hi\\""', b'""', b'"!"'],  # escaped quotes, an empty text
        [b'""', b'""'],
        [b'"\\ud83d\\ude00"', b'"x"'],  # a surrogate pair within one string
    ],
)
def test_joined_edge_cases(texts: list[str | bytes]) -> None:
    assert _joined(texts) == "".join(orjson.loads(t) for t in texts)


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_texts_in_a_row_are_written_as_one_run(api: str) -> None:
    """relay_parts hands consecutive PlainText / PlainTexts to ``texts`` at once: the same
    bytes as each part relayed on its own."""
    from gateway.edge.fastpath import PlainText, PlainTexts
    from gateway.frontends.messages_frontend import MessagesFrontEnd
    from gateway.frontends.responses_frontend import ResponsesFrontEnd

    body: dict[str, Any] = {"model": "m", "stream": True, "max_tokens": 9}
    body |= {"messages": [{"role": "user", "content": "hi"}]} if api == "messages" else {
        "input": "hi"}  # fmt: skip
    fin = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    parts = [
        (b"", FIRST), (b"", chunk("Hi ")), (b"", PlainText(b'"a"')),
        (b"", PlainTexts([b'"b"', b'""', b'"c\\n"'])), (b"", PlainText(b'"d"')),
        (b"", PlainTexts([b'"e"'])), (b"", fin), (b"", PlainText(b'"late"')),
        (b"data: [DONE]\n\n", None),
    ]  # fmt: skip
    outs = []
    for whole in (True, False):
        ids = itertools.count()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(responses_stream, "new_id", lambda p, ids=ids: f"{p}_{next(ids)}")
            mp.setattr(responses_stream, "new_ids", lambda a, b: (f"{a}_x", f"{b}_y"))
            fe: Any = MessagesFrontEnd({}, b"k") if api == "messages" else ResponsesFrontEnd(b"k")
            out = fe.stream(fe.parse(dict(body), {}))
            if api == "messages":
                out._s.id = "msg_fixed"
            raw = out.begin()
            if whole:
                raw += out.relay_parts([p for p, _ in parts], [o for _, o in parts])
            else:
                raw += b"".join(out.relay_parts([p], [o]) for p, o in parts)
            outs.append(re.sub(rb'"(created_at|completed_at)":\d+', b"0", raw))
    assert outs[0] == outs[1]
    assert b"late" in outs[0] and b"c\\n" in outs[0]


def test_no_usage_is_all_zero_counts() -> None:
    from gateway.frontends.responses_answer import usage_of

    assert usage_of(None) == usage_of({}) == usage_of("junk")
    assert orjson.dumps(usage_of(None)) == orjson.dumps(usage_of({}))  # the same key order


def test_a_stream_draws_two_ids_at_once() -> None:
    from gateway.frontends.responses_answer import new_ids

    first, second = new_ids("resp", "msg")
    assert re.fullmatch(r"resp_[0-9a-f]{32}", first) and re.fullmatch(r"msg_[0-9a-f]{32}", second)
    assert first[5:] != second[4:] and new_ids("a", "b") != new_ids("a", "b")


RICH = {
    "model": "glm-4.7", "input": "hi", "stream": True, "instructions": "Be \"brief\".",
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    "tool_choice": "auto", "parallel_tool_calls": False, "reasoning": {"summary": "auto"},
    "metadata": {"a": "é"}, "temperature": 0.5, "top_p": 0.9, "max_output_tokens": 9,
    "truncation": "auto", "safety_identifier": "u1", "prompt_cache_key": "k1",
    "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
}  # fmt: skip
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}


@pytest.mark.parametrize("body", [{"model": "m", "input": "hi", "stream": True}, RICH])
@pytest.mark.parametrize("end", ["stop", "length", "content_filter", "fail"])
def test_whole_response_events_are_the_response_dumped(body: dict[str, Any], end: str) -> None:
    """created, in_progress and the last event carry the Response as the dict form
    (``skeleton``, ``finish``, the output items) dumps it: written from pieces per stream."""
    from gateway.frontends.responses_answer import finish, skeleton

    req = to_chat(dict(body), key=b"k")
    s = ResponsesStream(req)
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
    raw = s.start() + s.feed(FIRST) + s.feed(chunk('Hi "x"'))
    raw += s.feed({"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]})
    raw += s.feed(chunk("é"))
    if end == "fail":
        raw += s.fail("stream_transient", "broke")
    else:
        raw += s.feed({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
        raw += s.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": end}]})
        raw += s.feed({"choices": [], "usage": USAGE}) + s.end()
    evs = [(kind, orjson.loads(data), data) for kind, data in frames(raw)]
    first = evs[0][1]["response"]
    expected = skeleton(req, first["id"], first["created_at"])
    whole = [(k, e, d) for k, e, d in evs if "response" in e]
    assert [k for k, _, _ in whole][:2] == ["response.created", "response.in_progress"]
    for kind, ev, data in whole[:2]:
        assert data == orjson.dumps({"type": kind, "sequence_number": ev["sequence_number"],
                                     "response": expected})  # fmt: skip
    kind, ev, data = whole[-1]
    expected["output"] = [e["item"] for k, e, _ in evs if k == "response.output_item.done"]
    assert len(expected["output"]) == (2 if end == "fail" else 4)  # message, reasoning, ...
    if end == "fail":
        expected["status"] = "failed"
        expected["error"] = {"code": "server_error", "message": "broke"}
    else:
        finish(expected, end, USAGE)
        expected["completed_at"] = ev["response"]["completed_at"]
    assert kind == {"stop": "response.completed", "fail": "response.failed"}.get(
        end, "response.incomplete"
    )
    assert data == orjson.dumps(
        {"type": kind, "sequence_number": ev["sequence_number"], "response": expected}
    )


def test_a_forked_child_draws_ids_of_its_own() -> None:
    """A forked child must not hand out its parent's ids (no cached randomness carries over)."""
    import os

    from gateway.frontends.responses_answer import new_ids

    new_ids("a", "b")  # drawn once in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.write(write, "".join(new_ids("a", "b")).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    assert len(child) == 68 and child != "".join(new_ids("a", "b"))


COUNT = st.one_of(st.integers(-3, 2**40), st.booleans(), st.none(), st.text(max_size=2))
USAGES = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.fixed_dictionaries(
        {},
        optional={
            "prompt_tokens": COUNT,
            "completion_tokens": COUNT,
            "total_tokens": COUNT,
            "prompt_tokens_details": st.one_of(COUNT, st.fixed_dictionaries(
                {}, optional={"cached_tokens": COUNT})),
            "completion_tokens_details": st.one_of(COUNT, st.fixed_dictionaries(
                {}, optional={"reasoning_tokens": COUNT})),
        },
    ),
)  # fmt: skip


@given(USAGES)
def test_usage_template_is_usage_of_dumped(usage: Any) -> None:
    from gateway.frontends.responses_answer import usage_of

    assert responses_stream._usage_json(usage) == orjson.dumps(usage_of(usage))


@given(st.lists(st.tuples(st.text(max_size=6), QUOTE), max_size=10))
def test_a_messages_quoted_text_is_its_text_dumped(parts: list[tuple[str, Any]]) -> None:
    """``_quoted`` (the message's text as its JSON string, written as the parts came when
    none has an escape) is ``_joined`` dumped."""
    texts = [quote(t) for t, quote in parts]
    assert responses_stream._quoted(texts) == orjson.dumps(_joined(texts))


@pytest.mark.parametrize(
    "texts",
    [
        [b'"a\tb"'],  # a raw control character: not JSON
        [b'"ok"', b'"\xff"'],  # not UTF-8
        [b'"\xed\xa0\x80"'],  # an encoded surrogate
    ],
)
def test_a_quoted_text_that_is_not_json_fails_as_decoding_it_does(texts: list[bytes]) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        _joined(texts)  # type: ignore[arg-type]
    with pytest.raises(orjson.JSONDecodeError):
        responses_stream._quoted(texts)  # type: ignore[arg-type]


@pytest.mark.parametrize("end", [None, "stop", "tool_calls", "length", "content_filter", "odd"])
def test_the_last_event_is_finish_applied(end: str | None) -> None:
    """The last event's status, completed_at and incomplete_details are what ``finish`` sets
    for the stream's finish reason (none: completed)."""
    from gateway.frontends.responses_answer import finish

    s = ResponsesStream(to_chat({"model": "m", "input": "hi", "stream": True}, key=b"k"))
    raw = s.start() + s.feed(chunk("Hi"))
    if end is not None:
        raw += s.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": end}]})
    kind, data = frames(raw + s.end())[-1]
    got = orjson.loads(data)["response"]
    expected = finish({"completed_at": None, "incomplete_details": None}, end, None)
    if expected["completed_at"] is not None:
        assert abs(got["completed_at"] - expected["completed_at"]) <= 2
        expected["completed_at"] = got["completed_at"]
    assert kind == f"response.{expected['status']}"
    for key in ("status", "completed_at", "incomplete_details", "usage"):
        assert got[key] == expected[key]


PASSIVE_VALUES = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.just("auto"),
                           st.just({}), st.just(["reasoning.encrypted_content"]))  # fmt: skip


@given(st.dictionaries(st.sampled_from(["model", "input", "stream", "instructions", "store",
                                        "metadata", "include", "truncation", "user", "zzz",
                                        "max_output_tokens", "prompt_cache_key"]),
                       PASSIVE_VALUES, max_size=6))  # fmt: skip
def test_passive_fields_read_at_once_are_read_one_by_one(body: dict[str, Any]) -> None:
    """``_passive``'s shortcut for a body with none of its fields echoes what reading them
    one by one echoes, and ignores nothing more."""
    from gateway.errors import GatewayError
    from gateway.frontends import responses
    from gateway.frontends.messages_fields import Ignored

    got: list[Any] = []
    for read in (responses._passive, responses._read_passive):
        ignored = Ignored()
        try:
            include, echo = read(body, ignored)
        except GatewayError as err:
            got.append(("error", err.message))
        else:
            got.append((include, list(echo.items()), ignored.entries()))
    assert got[0] == got[1]


ANY = st.one_of(st.none(), st.booleans(), st.integers(-1, 3), st.floats(-1, 3), st.text(max_size=3))
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "developer"]), "content": st.text(max_size=4)},
    optional={"type": st.just("message"), "id": st.text(max_size=3)},
)
ITEM = st.one_of(MESSAGE, st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "function_call", "reasoning"]),
        "role": st.one_of(st.sampled_from(["user", "system", "developer", "assistant", "bot"]),
                          st.just(["user"])),
        "content": st.one_of(st.text(max_size=4), st.just([{"type": "input_text", "text": "x"}]),
                             st.none()),
    },
))  # fmt: skip
PLAIN_BODY = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(["m", "glm-4.7"]), st.just("m"), st.just(""), ANY),
        "input": st.one_of(st.text(max_size=5), st.lists(MESSAGE, min_size=1, max_size=3),
                           st.lists(ITEM, max_size=3), ANY),
        "instructions": st.one_of(st.none(), st.text(max_size=4), ANY),
        "stream": st.one_of(st.booleans(), ANY),
        "max_output_tokens": st.one_of(st.none(), st.integers(1, 99), ANY),
        "temperature": st.one_of(st.none(), st.floats(0, 2), ANY),
        "top_p": st.one_of(st.none(), st.floats(0, 1), ANY),
    },
)  # fmt: skip


PLAIN_OK = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["m", "glm-4.7"]),
        "input": st.one_of(st.text(max_size=5), st.lists(MESSAGE, min_size=1, max_size=3)),
    },
    optional={
        "instructions": st.one_of(st.none(), st.text(max_size=4)),
        "stream": st.one_of(st.none(), st.booleans()),
        "max_output_tokens": st.one_of(st.none(), st.integers(1, 99), st.just(5.0)),
        "temperature": st.one_of(st.none(), st.floats(0, 2), st.integers(0, 2)),
        "top_p": st.one_of(st.none(), st.floats(0, 1)),
    },
)


@settings(max_examples=400)
@given(st.one_of(PLAIN_OK, PLAIN_BODY))
def test_a_plain_request_is_translated_as_the_general_path_does(body: dict[str, Any]) -> None:
    """``to_chat``'s shortcut for a plain body (``_plain``) gives what reading it field by field
    gives (the chat body and the echo byte for byte, in order), or leaves it to that path."""
    from gateway.errors import GatewayError
    from gateway.frontends import responses

    got: list[Any] = []
    for plain in (responses._PLAIN, frozenset()):  # frozenset(): no body is plain
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(responses, "_PLAIN", plain)
            try:
                req = to_chat(dict(body), key=b"k")
            except GatewayError as err:
                got.append(("error", err.message, err.param))
            else:
                got.append((orjson.dumps(req.chat), orjson.dumps(req.echo), req.requested_model,
                             req.stream, req.summary, req.encrypted, req.ignored, req.key,
                             req.names.back("f")))  # fmt: skip
    assert got[0] == got[1]


def test_plain_requests_take_the_shortcut() -> None:
    from gateway.frontends import responses

    inputs: list[Any] = ["hi", [{"role": "developer", "content": "x"},
                                {"type": "message", "role": "user", "content": "y"}]]  # fmt: skip
    for value in inputs:
        body = {"model": "m", "input": value, "instructions": "be", "stream": True,
                "max_output_tokens": 9, "temperature": 0.5}  # fmt: skip
        assert responses._plain(body, b"k") is not None


@given(st.lists(st.tuples(st.text(max_size=6), QUOTE), min_size=2, max_size=8))
def test_a_text_then_a_run_is_relayed_as_each_on_its_own(parts: list[tuple[str, Any]]) -> None:
    """The usual read (a ``PlainText`` then a ``PlainTexts``) relayed at once writes what
    relaying each piece on its own writes (also before any item is open)."""
    from gateway.edge.fastpath import PlainText, PlainTexts
    from gateway.frontends.responses_frontend import ResponsesFrontEnd

    quoted = [q if isinstance(q, bytes) else orjson.dumps(q) for q in (f(t) for t, f in parts)]
    for opened in (True, False):
        outs = []
        for whole in (True, False):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(responses_stream, "new_id", lambda p: f"{p}_1")
                mp.setattr(responses_stream, "new_ids", lambda a, b: (f"{a}_x", f"{b}_y"))
                fe = ResponsesFrontEnd(b"k")
                out = fe.stream(fe.parse({"model": "m", "input": "hi", "stream": True}, {}))
                raw = out.begin()
                if opened:
                    raw += out.relay_parts([b""], [chunk("Hi ")])
                objs: list[Any] = [PlainText(quoted[0]), PlainTexts(quoted[1:])]
                if whole:
                    raw += out.relay_parts([b"", b""], objs)
                else:
                    raw += b"".join(out.relay_parts([b""], [o]) for o in objs)
                raw += out.relay_parts([b"data: [DONE]\n\n"], [None])
                outs.append(re.sub(rb'"(created_at|completed_at)":\d+', b"0", raw))
        assert outs[0] == outs[1]
