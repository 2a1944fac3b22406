"""Responses streams from chat chunks: golden event sequences (plain text, parallel tool calls
with interleaved fragments, reasoning then text, namespaced calls, length, text then a call,
failure mid-stream); every event parsed with the SDK's ``ResponseStreamEvent`` and checked
against OpenAI's published event schemas."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pydantic
from openai.types.responses import Response, ResponseStreamEvent

from gateway.errors import UpstreamsFailed
from gateway.frontends.responses import to_chat
from gateway.frontends.responses_frontend import ResponsesFrontEnd
from gateway.frontends.responses_stream import ResponsesStream
from tests.support.openapi import validate
from tests.unit.test_frontend_responses import CODEX, KEY, check_response

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.reasoning_summary_part.added": "ResponseReasoningSummaryPartAddedEvent",
    "response.reasoning_summary_part.done": "ResponseReasoningSummaryPartDoneEvent",
    "response.reasoning_summary_text.delta": "ResponseReasoningSummaryTextDeltaEvent",
    "response.reasoning_summary_text.done": "ResponseReasoningSummaryTextDoneEvent",
    "error": "ResponseErrorEvent",
}


OPEN_RESPONSES = {
    "response.created": "ResponseCreatedStreamingEvent",
    "response.in_progress": "ResponseInProgressStreamingEvent",
    "response.completed": "ResponseCompletedStreamingEvent",
    "response.incomplete": "ResponseIncompleteStreamingEvent",
    "response.failed": "ResponseFailedStreamingEvent",
    "response.output_item.added": "ResponseOutputItemAddedStreamingEvent",
    "response.output_item.done": "ResponseOutputItemDoneStreamingEvent",
    "response.content_part.added": "ResponseContentPartAddedStreamingEvent",
    "response.content_part.done": "ResponseContentPartDoneStreamingEvent",
    "response.output_text.delta": "ResponseOutputTextDeltaStreamingEvent",
    "response.output_text.done": "ResponseOutputTextDoneStreamingEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaStreamingEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneStreamingEvent",
    "response.reasoning_summary_part.added": "ResponseReasoningSummaryPartAddedStreamingEvent",
    "response.reasoning_summary_part.done": "ResponseReasoningSummaryPartDoneStreamingEvent",
    "response.reasoning_summary_text.delta": "ResponseReasoningSummaryDeltaStreamingEvent",
    "response.reasoning_summary_text.done": "ResponseReasoningSummaryDoneStreamingEvent",
    "error": "ErrorStreamingEvent",
}
"""The Open Responses project's event models (``openresponses-types``, optional)."""


def open_responses(ev: dict[str, Any]) -> None:
    try:
        import openresponses_types
    except ImportError:  # optional: the lead pins it
        return
    getattr(openresponses_types, OPEN_RESPONSES[ev["type"]]).model_validate(ev)


def events(raw: bytes) -> list[dict[str, Any]]:
    """Parse and check every event: the SSE framing, the SDK's union, OpenAI's schema, the
    sequence numbers, and each final Response."""
    out = []
    for frame in raw.split(b"\n\n"):
        if not frame:
            continue
        head, data = frame.split(b"\n", 1)
        ev = orjson.loads(data.removeprefix(b"data: "))
        assert head == b"event: " + ev["type"].encode()
        EVENTS.validate_python(ev)
        validate(SCHEMAS[ev["type"]], ev)
        open_responses(ev)
        if ev["type"] in ("response.completed", "response.incomplete", "response.failed"):
            check_response(ev["response"])
        out.append(ev)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **kw: Any) -> bytes:
    choices = [] if delta is None and finish is None else [
        {"index": 0, "delta": delta or {}, "finish_reason": finish}]  # fmt: skip
    obj = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "glm-4.7",
           "choices": choices, **kw}  # fmt: skip
    return b"data: " + orjson.dumps(obj) + b"\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def run(body: dict[str, Any], chunks: list[bytes], done: bool = True) -> list[dict[str, Any]]:
    fe = ResponsesFrontEnd(KEY)
    out = fe.stream(fe.parse(copy.deepcopy(body), {}))
    raw = out.begin() + b"".join(out.relay(c) for c in chunks)
    if done:
        raw += out.relay(b"data: [DONE]\n\n")
    return events(raw)


def kinds(evs: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in evs]


PLAIN = {"model": "coding", "input": "hi", "stream": True}


def test_plain_text() -> None:
    evs = run(PLAIN, [chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo"}),
                      chunk(finish="stop"), chunk(usage=USAGE)])  # fmt: skip
    assert kinds(evs) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    final = Response.model_validate(evs[-1]["response"])
    assert final.output_text == "Hello" and final.model == "coding"
    assert final.usage is not None and final.usage.total_tokens == 10
    assert evs[-1]["response"]["id"] == evs[0]["response"]["id"]


def call(index: int, cid: str | None = None, name: str | None = None,
         args: str | None = None) -> dict[str, Any]:  # fmt: skip
    fn: dict[str, Any] = {}
    if name:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    c: dict[str, Any] = {"index": index, "function": fn}
    if cid:
        c.update(id=cid, type="function")
    return c


def test_parallel_calls_interleaved_and_namespaced() -> None:
    evs = run(CODEX, [
        chunk({"tool_calls": [call(0, "call_a", "exec_command", '{"cmd"'),
                              call(1, "call_b", "multi_agent_v1__spawn", "{")]}),
        chunk({"tool_calls": [call(1, args="}")]}),
        chunk({"tool_calls": [call(0, args=':"ls"}')]}),
        chunk(finish="tool_calls"), chunk(usage=USAGE)])  # fmt: skip
    done = [e["item"] for e in evs if e["type"] == "response.output_item.done"]
    assert [(i["call_id"], i["name"], i["arguments"]) for i in done] == [
        ("call_a", "exec_command", '{"cmd":"ls"}'), ("call_b", "spawn", "{}")]  # fmt: skip
    assert done[1]["namespace"] == "multi_agent_v1"
    assert [e["output_index"] for e in evs if e["type"] == "response.output_item.done"] == [0, 1]
    deltas = [(e["item_id"], e["delta"]) for e in evs
              if e["type"] == "response.function_call_arguments.delta"]  # fmt: skip
    assert deltas == [(done[0]["id"], '{"cmd"'), (done[0]["id"], ':"ls"}'),
                      (done[1]["id"], "{"), (done[1]["id"], "}")]  # fmt: skip
    assert evs[-1]["response"]["output"] == done


def test_reasoning_then_text_round_trips() -> None:
    evs = run(CODEX, [chunk({"reasoning_content": "  a\n"}), chunk({"reasoning_content": "b"}),
                      chunk({"content": "ok"}), chunk(finish="stop")])  # fmt: skip
    assert kinds(evs)[2:9] == [
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]  # fmt: skip
    output = evs[-1]["response"]["output"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "  a\nb"}]
    assert [e["output_index"] for e in evs if e["type"] == "response.output_item.done"] == [0, 1]
    body = copy.deepcopy(CODEX)
    body["input"] += [*output, {"role": "user", "content": "next"}]
    chat = to_chat(body, key=KEY).chat
    assert chat["messages"][2] == {"role": "assistant", "content": "ok",
                                   "reasoning_content": "  a\nb"}  # fmt: skip


def test_reasoning_without_summary_emits_no_summary_events() -> None:
    evs = run({**PLAIN, "reasoning": {"effort": "high"}},
              [chunk({"reasoning_content": "r"}), chunk({"content": "t"}),
               chunk(finish="stop")])  # fmt: skip
    assert not any("summary" in k for k in kinds(evs))
    assert evs[-1]["response"]["output"][0] == {
        "type": "reasoning", "id": evs[2]["item"]["id"], "summary": []}  # fmt: skip


def test_length_is_incomplete() -> None:
    evs = run(
        {**PLAIN, "max_output_tokens": 2}, [chunk({"content": "Hel"}), chunk(finish="length")]
    )
    assert evs[-1]["type"] == "response.incomplete"
    assert evs[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_text_then_tool_call() -> None:
    evs = run(CODEX, [chunk({"content": "Running it."}),
                      chunk({"tool_calls": [call(0, "call_1", "exec_command", "{}")]}),
                      chunk(finish="tool_calls")])  # fmt: skip
    output = evs[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["message", "function_call"]
    assert kinds(evs)[-6:] == [
        "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip


def test_failure_mid_stream() -> None:
    fe = ResponsesFrontEnd(KEY)
    out = fe.stream(fe.parse({"model": "m", "input": "hi", "stream": True}, {}))
    raw = out.begin() + out.relay(chunk({"content": "par"}))
    raw += out.fail(UpstreamsFailed("upstream dropped", code="upstreams_failed"))
    raw += out.relay(b"data: [DONE]\n\n")  # nothing after the failure
    evs = events(raw)
    assert kinds(evs)[-2:] == ["response.failed", "error"]
    assert "response.completed" not in kinds(evs)
    assert evs[-2]["response"]["status"] == "failed"
    assert evs[-2]["response"]["error"]["code"] == "server_error"
    assert evs[-1]["code"] == "upstreams_failed" and evs[-1]["message"] == "upstream dropped"


def test_relay_parts_takes_objects() -> None:
    req = to_chat(PLAIN, key=KEY)
    s = ResponsesStream(req)
    fe = ResponsesFrontEnd(KEY)
    out = fe.stream(fe.parse(dict(PLAIN), {}))
    obj = orjson.loads(chunk({"content": "x"})[6:])
    raw = out.begin() + out.relay_parts([b"", b"data: [DONE]\n\n"], [obj, None])
    assert kinds(events(raw))[-1] == "response.completed"
    assert s.feed({"choices": "bad"}) == b""


def test_plain_texts_are_decoded_once_into_the_completed_text() -> None:
    from gateway.edge.fastpath import PlainText

    fe = ResponsesFrontEnd(KEY)
    out = fe.stream(fe.parse(dict(PLAIN), {}))
    first = orjson.loads(chunk({"content": "Hé "})[6:])  # the full path opens the item
    texts = ['say \\"hi\\"', "a\\nb ", "\\u4e2d\\u6587", "", "end"]
    parts = [PlainText(b'"' + t.encode() + b'"') for t in texts]
    raw = out.begin() + out.relay_parts([b""] * 6, [first, *parts])
    raw += out.relay(b"data: [DONE]\n\n")
    evs = events(raw)
    deltas = [e["delta"] for e in evs if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hé ", 'say "hi"', "a\nb ", "中文", "end"]
    done = next(e for e in evs if e["type"] == "response.output_text.done")
    assert done["text"] == 'Hé say "hi"a\nb 中文end'
    assert evs[-1]["response"]["output"][0]["content"][0]["text"] == done["text"]
