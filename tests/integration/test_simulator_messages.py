"""The simulator's native Anthropic Messages surface (``/{provider}/anthropic/v1/messages``),
driven by the real ``anthropic`` SDK, every body and event held to the SDK's types and the
published spec (tests/support/messages_wire.py); and the ``tool_call`` directive on chat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
import pytest_asyncio

from gateway.simulator.faults import DirectiveError, parse_rule
from gateway.simulator.models import SimModel
from gateway.simulator.server import SimServer, start_simulator
from tests.support.messages_wire import check_error, check_message, check_stream, parse_sse


def sim(model: str, context: int, dialect: str = "zhipu", **caps: bool) -> SimModel:
    provider = {"zhipu": "zai", "vllm": "vllm"}[dialect]
    return SimModel(
        provider, model, model, dialect, context, 128_000, caps.get("images", False),
        caps.get("tools", True), False, caps.get("thinking", True),
    )  # fmt: skip


MODELS = [
    sim("glm-4.7", 200_000),
    sim("glm-4.6v", 128_000, images=True),
    sim("glm-4-32b", 128_000, thinking=False),
    sim("glm-4-airx", 2_000, tools=False, thinking=False),
    sim("glm-4-9b", 8192, dialect="vllm"),
]
URL = "/zai/anthropic/v1/messages"
KEY = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
}
READ = {
    "name": "Read",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}


@pytest_asyncio.fixture(scope="module")
async def sim_server() -> AsyncIterator[SimServer]:
    server = await start_simulator(MODELS)
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def http(sim_server: SimServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=sim_server.url) as s:
        await (await s.delete("/_sim/faults")).read()
        yield s


@pytest_asyncio.fixture
async def client(sim_server: SimServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    base = f"{sim_server.url}/zai/anthropic"
    c = anthropic.AsyncAnthropic(base_url=base, api_key="k", max_retries=0)
    yield c
    await c.close()


def said(text: str, rule: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One user message, with a directive when ``rule`` is given."""
    if rule is not None:
        text += " <<sim:" + orjson.dumps(rule).decode() + ">>"
    return [{"role": "user", "content": text}]


def req(text: str, rule: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"model": "glm-4.7", "max_tokens": 1024, "messages": said(text, rule), **kw}


async def post(
    http: aiohttp.ClientSession, body: dict[str, Any], headers: dict[str, str] = KEY
) -> tuple[int, Any]:
    """Status and parsed body (JSON, or the raw SSE bytes for a stream)."""
    async with http.post(URL, json=body, headers=headers) as r:
        data = await r.read()
        if r.content_type == "text/event-stream":
            return r.status, data
        return r.status, orjson.loads(data)


async def test_create_answers_a_valid_message(
    client: anthropic.AsyncAnthropic, http: aiohttp.ClientSession
) -> None:
    msg = await client.messages.create(**req("hello there"))
    assert msg.id.startswith("msg_") and msg.stop_reason == "end_turn"
    assert [b.type for b in msg.content] == ["text"]
    assert "You said: hello there" in msg.content[0].text  # type: ignore[union-attr]
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert msg.usage.cache_read_input_tokens == 0
    status, body = await post(http, req("hello there"))
    assert status == 200
    check_message(body)


async def test_stream_accumulates_to_the_same_message(
    client: anthropic.AsyncAnthropic, http: aiohttp.ClientSession
) -> None:
    async with client.messages.stream(**req("stream me a longer answer please")) as s:
        final = await s.get_final_message()
    whole = await client.messages.create(**req("stream me a longer answer please"))
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    _, raw = await post(http, req("stream me a longer answer please", stream=True))
    events, snapshot = check_stream(raw)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names.count("content_block_delta") > 1
    assert snapshot.content[0].text == final.content[0].text


async def test_tool_call_round_trip(client: anthropic.AsyncAnthropic) -> None:
    rule = {"tool_call": {"name": "Bash", "arguments": {"command": "echo hi"}}}
    messages: list[Any] = said("run echo hi", rule)
    async with client.messages.stream(
        model="glm-4.7", max_tokens=1024, messages=messages, tools=[READ, BASH]
    ) as s:
        first = await s.get_final_message()
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.id.startswith("toolu_") and use.name == "Bash"
    assert use.input == {"command": "echo hi"}
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "hi"}],
        },
    ]
    second = await client.messages.create(
        model="glm-4.7", max_tokens=1024, messages=messages, tools=[READ, BASH]
    )
    assert second.stop_reason == "end_turn" and [b.type for b in second.content] == ["text"]
    without = await client.messages.create(**req("no Bash offered", rule, tools=[READ]))
    assert without.stop_reason == "end_turn"  # the named tool is not offered: text
    generated = await client.messages.create(**req("any tool", tools=[READ, BASH]))
    assert generated.content[0].name == "Read"  # type: ignore[union-attr]


async def test_tool_use_stream_is_valid(http: aiohttp.ClientSession) -> None:
    rule = {"tool_call": {"name": "Bash", "arguments": {"command": "echo a long line of text"}}}
    body = req("go", rule, tools=[BASH], stream=True, thinking={"type": "adaptive"})
    _, raw = await post(http, body)
    events, snap = check_stream(raw)
    deltas = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert deltas.count("input_json_delta") > 1 and "signature_delta" in deltas
    assert snap.content[1].input == {"command": "echo a long line of text"}


@pytest.mark.parametrize(
    "thinking", [{"type": "enabled", "budget_tokens": 2048}, {"type": "adaptive"}]
)
async def test_thinking_blocks_come_first_and_signed(
    client: anthropic.AsyncAnthropic, http: aiohttp.ClientSession, thinking: dict[str, Any]
) -> None:
    msg = await client.messages.create(**req("think", thinking=thinking))
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].signature  # type: ignore[union-attr]
    async with client.messages.stream(**req("think", thinking=thinking)) as s:
        streamed = await s.get_final_message()
    assert streamed.content[0] == msg.content[0]
    _, raw = await post(http, req("think", thinking=thinking, stream=True))
    kinds = {d["delta"]["type"] for n, d in check_stream(raw)[0] if n == "content_block_delta"}
    assert kinds == {"thinking_delta", "signature_delta", "text_delta"}
    off = await client.messages.create(**req("think", thinking={"type": "disabled"}))
    absent = await client.messages.create(**req("think"))
    no_model = await client.messages.create(
        **{**req("think", thinking=thinking), "model": "glm-4-32b"}
    )
    assert [b.type for m in (off, absent, no_model) for b in m.content] == ["text"] * 3


async def test_max_tokens_and_stop_sequences(
    client: anthropic.AsyncAnthropic, http: aiohttp.ClientSession
) -> None:
    short = await client.messages.create(**{**req("a long enough question"), "max_tokens": 3})
    assert short.stop_reason == "max_tokens"
    full = await client.messages.create(**req("stop"))
    stopped = await client.messages.create(**req("stop", stop_sequences=["nothing", "via"]))
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "via"
    assert full.content[0].text.startswith(stopped.content[0].text)  # type: ignore[union-attr]
    assert "via" not in stopped.content[0].text  # type: ignore[union-attr]
    for body in ({**req("x"), "max_tokens": 3}, req("stop", stop_sequences=["via"])):
        _, raw = await post(http, {**body, "stream": True})
        _, snap = check_stream(raw)
        assert snap.stop_reason in ("max_tokens", "stop_sequence")


async def test_refusals_are_anthropic_errors(
    client: anthropic.AsyncAnthropic, http: aiohttp.ClientSession
) -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
    cases: list[tuple[dict[str, Any], dict[str, str], int, str]] = [
        (req("hi"), {}, 401, "authentication_error"),
        (req("hi"), {"x-api-key": "bad-key"}, 401, "authentication_error"),
        (req("hi"), {"Authorization": "Bearer broke"}, 429, "rate_limit_error"),
        ({**req("hi"), "model": "glm-9"}, KEY, 404, "not_found_error"),
        ({"model": "glm-4.7", "messages": said("hi")}, KEY, 400, "invalid_request_error"),
        ({**req("hi"), "max_tokens": 200_000}, KEY, 400, "invalid_request_error"),
        ({**req("hi"), "messages": []}, KEY, 400, "invalid_request_error"),
        (
            {**req("hi"), "model": "glm-4-32b", "messages": [{"role": "user", "content": [image]}]},
            KEY, 400, "invalid_request_error",
        ),
        ({**req("hi"), "model": "glm-4-airx", "tools": [BASH]}, KEY, 400, "invalid_request_error"),
        ({**req("word " * 9000), "model": "glm-4-airx"}, KEY, 400, "invalid_request_error"),
        (req("hi", {"status": 500}), KEY, 500, "api_error"),
        (req("hi", {"status": 529}), KEY, 529, "overloaded_error"),
        (req("hi", {"status": 403}), KEY, 403, "permission_error"),
        (req("hi <<sim:{oops>>"), KEY, 400, "invalid_request_error"),
    ]  # fmt: skip
    for body, headers, status, etype in cases:
        got, err = await post(http, body, headers)
        assert (got, err["error"]["type"]) == (status, etype), (body, err)
        check_error(err)
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        await client.messages.create(**{**req("word " * 9000), "model": "glm-4-airx"})
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.create(**req("hi", {"status": 529, "message": "busy"}))
    with pytest.raises(anthropic.InternalServerError):
        await client.messages.create(**req("hi", {"status": 500}))
    async with http.post("/vllm/anthropic/v1/messages", json=req("hi"), headers=KEY) as r:
        assert r.status == 404  # only the zhipu hosts serve the native surface


async def test_rate_limit_with_retry_after_and_key_echo(client: anthropic.AsyncAnthropic) -> None:
    rule = {"status": 429, "code": "1302", "retry_after": 3, "message": "slow down {api_key}"}
    with pytest.raises(anthropic.RateLimitError) as info:
        await client.messages.create(**req("hi", rule))
    assert info.value.response.headers["retry-after"] == "3"
    body: Any = info.value.body
    assert body["error"] == {"type": "rate_limit_error", "message": "slow down k", "code": "1302"}
    check_error(body)


async def test_cut_after_chunks_drops_the_connection(http: aiohttp.ClientSession) -> None:
    got = b""
    body = req("a reasonably long answer to cut", {"cut_after_chunks": 2}, stream=True)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(URL, json=body, headers=KEY) as r:
            async for piece in r.content.iter_any():
                got += piece
    names = [n for n, _ in parse_sse(got)]
    assert names.count("content_block_delta") == 2 and "message_stop" not in names
    with pytest.raises(aiohttp.ServerDisconnectedError):  # non-streams: no answer at all
        await post(http, req("x", {"cut_after_chunks": 0}))


async def test_cut_with_a_finish_reason_ends_cleanly(http: aiohttp.ClientSession) -> None:
    body = req("a long answer", {"cut_after_chunks": 1, "finish_reason": "sensitive"}, stream=True)
    _, raw = await post(http, body)
    events, snap = check_stream(raw)
    assert snap.stop_reason == "refusal"
    assert [n for n, _ in events].count("content_block_delta") == 1


async def test_stream_error_is_an_error_event(
    client: anthropic.AsyncAnthropic, http: aiohttp.ClientSession
) -> None:
    spec = {"code": "overloaded_error", "message": "gone {api_key}"}
    rule = {"stream_error": spec, "cut_after_chunks": 1}
    _, raw = await post(http, req("hi there", rule, stream=True))
    events, final = check_stream(raw)
    assert final is None and events[-1][1]["error"]["type"] == "overloaded_error"
    assert events[-1][1]["error"]["message"] == "gone k"
    with pytest.raises(anthropic.APIStatusError, match="gone k"):
        async with client.messages.stream(**req("hi there", rule)) as s:
            await s.get_final_message()


async def test_hang_meets_the_client_timeout(
    sim_server: SimServer, http: aiohttp.ClientSession
) -> None:
    before = await (await http.get("/_sim/streams")).json()
    base = f"{sim_server.url}/zai/anthropic"
    async with anthropic.AsyncAnthropic(
        base_url=base, api_key="k", max_retries=0, timeout=0.3
    ) as c:
        with pytest.raises(anthropic.APITimeoutError):
            await c.messages.create(**req("hi", {"hang": True}))
    for _ in range(200):
        after = await (await http.get("/_sim/streams")).json()
        if after["client_gone"] > before["client_gone"]:
            break
        await asyncio.sleep(0.02)
    assert after["client_gone"] == before["client_gone"] + 1 and after["open"] == before["open"]


async def test_malformed_and_delays_on_the_messages_surface(http: aiohttp.ClientSession) -> None:
    _, raw = await post(http, req("x", {"malformed": "no_done"}, stream=True))
    names = [n for n, _ in parse_sse(raw)]
    assert names[-1] == "message_delta"  # everything but message_stop
    _, raw = await post(http, req("x", {"malformed": "error_body", "status": 200}))
    check_error(raw)
    slow = {"latency_ms": 1, "ttft_ms": 1, "chunk_delay_ms": 1}
    _, raw = await post(http, req("still valid", slow, stream=True))
    assert check_stream(raw)[1].stop_reason == "end_turn"


async def test_match_api_selects_the_surface(
    sim_server: SimServer, http: aiohttp.ClientSession
) -> None:
    rules = [{"match": {"api": "messages"}, "status": 529}]
    await (await http.post("/_sim/faults", json=rules)).read()
    status, _ = await post(http, req("hi"))
    assert status == 529
    chat = {"model": "glm-4.7", "messages": said("hi")}
    async with http.post(
        "/zai/v1/chat/completions", json=chat, headers={"Authorization": "Bearer k"}
    ) as r:
        assert r.status == 200
    await (await http.post("/_sim/faults", json=[{"match": {"api": "chat"}, "status": 500}])).read()
    assert (await post(http, req("hi")))[0] == 200
    with pytest.raises(DirectiveError, match="api"):
        parse_rule({"match": {"api": "responses"}})


async def test_requests_are_recorded_with_the_anthropic_headers(
    client: anthropic.AsyncAnthropic, http: aiohttp.ClientSession
) -> None:
    await (await http.delete("/_sim/requests")).read()
    await client.beta.messages.create(**req("hi"), betas=["interleaved-thinking-2025-05-14"])
    beta = {**KEY, "anthropic-beta": "claude-code-20250219"}
    async with http.post(URL + "?beta=true", json=req("hi"), headers=beta) as r:
        assert r.status == 200  # Claude Code's path
    sdk, rec = await (await http.get("/_sim/requests")).json()
    assert rec["api"] == "messages" and rec["path"] == URL and rec["query"] == "beta=true"
    assert sdk["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    headers = {k.lower(): v for k, v in rec["headers"].items()}
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "claude-code-20250219"
    assert headers["x-api-key"] == "<redacted>" and rec["body"]["model"] == "glm-4.7"
    async with http.post(URL, json=req("hi"), headers={"Authorization": "Bearer k"}) as r:
        assert r.status == 200  # a bearer token is a key too


def test_tool_call_fields_are_checked() -> None:
    rule = parse_rule({"tool_call": {"name": "Bash", "arguments": {"command": "ls"}}})
    assert rule.tool_call == {"name": "Bash", "arguments": {"command": "ls"}}
    for bad in ({"name": ""}, {"name": "x", "arguments": "ls"}, "Bash", {"name": "x", "id": 1}):
        with pytest.raises(DirectiveError, match="tool_call"):
            parse_rule({"tool_call": bad})


async def test_tool_call_on_the_chat_dialect(sim_server: SimServer) -> None:
    tools: list[Any] = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("Read", "Bash")
    ]
    rule = {"tool_call": {"name": "Bash", "arguments": {"command": "echo hi"}}}
    messages: list[Any] = said("run it", rule)
    async with openai.AsyncOpenAI(base_url=f"{sim_server.url}/zai/v1", api_key="k") as c:
        first = await c.chat.completions.create(model="glm-4.7", messages=messages, tools=tools)
        (call,) = first.choices[0].message.tool_calls or []
        assert first.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "Bash"  # type: ignore[union-attr]
        assert orjson.loads(call.function.arguments) == {"command": "echo hi"}  # type: ignore[union-attr]
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "hi"},
        ]
        second = await c.chat.completions.create(model="glm-4.7", messages=messages, tools=tools)
        assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


CLAUDE_CODE_BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14"


async def test_a_claude_code_shaped_loop(sim_server: SimServer) -> None:
    """What ``claude -p`` sends (agent-apis.md): bearer token, betas, cached system blocks,
    many tools, adaptive thinking, extra fields; a tool call, its result, then text."""
    tools = [BASH, READ] + [
        {"name": f"Tool{i}", "input_schema": {"type": "object"}} for i in range(22)
    ]
    system = [
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief. " * 500},
    ]
    rule = {"tool_call": {"name": "Bash", "arguments": {"command": "echo hi"}}}
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "say hi <<sim:" + orjson.dumps(rule).decode() + ">>"}
            ],
        }
    ]
    extra = {
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": '{"device_id": "d", "session_id": "s"}'},
    }
    async with anthropic.AsyncAnthropic(
        base_url=f"{sim_server.url}/zai/anthropic", auth_token="t", max_retries=0
    ) as c:
        answers = []
        for _ in range(2):
            async with c.messages.stream(
                model="glm-4.7", max_tokens=64_000, system=system, messages=messages,
                tools=tools, thinking={"type": "adaptive"},
                extra_body=extra,
                extra_headers={"anthropic-beta": CLAUDE_CODE_BETAS},
            ) as s:  # fmt: skip
                final = await s.get_final_message()
            answers.append(final)
            messages.append(
                {"role": "assistant", "content": [b.model_dump() for b in final.content]}
            )
            uses = [b for b in final.content if b.type == "tool_use"]
            results = [
                {"type": "tool_result", "tool_use_id": u.id, "content": "hi\n"} for u in uses
            ]
            messages.append({"role": "user", "content": results})
    assert [a.stop_reason for a in answers] == ["tool_use", "end_turn"]
    assert [[b.type for b in a.content] for a in answers] == [
        ["thinking", "tool_use"],
        ["thinking", "text"],
    ]
