"""The simulator's chaos modes: malformed answers, trickles, seeded rates, stream counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from gateway.simulator.faults import DirectiveError, parse_rule
from gateway.simulator.models import SimModel
from gateway.simulator.server import SimServer, start_simulator

MODELS = [
    SimModel("zai", "glm-4-32b", "glm-4-32b", "zhipu", 128_000, None, False, True, False, False),
    SimModel("vllm", "glm-4-9b", "glm-4-9b", "vllm", 8192, None, False, False, False, False),
]
AUTH = {"Authorization": "Bearer k"}


@pytest_asyncio.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    server = await start_simulator(MODELS)
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def http(sim: SimServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=sim.url) as s:
        await (await s.delete("/_sim/faults")).read()
        yield s


def body(rule: dict[str, Any] | None, stream: bool, model: str = "glm-4-9b") -> dict[str, Any]:
    text = "a few words of answer please"
    if rule is not None:
        text += " <<sim:" + orjson.dumps(rule).decode() + ">>"
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}


async def raw(
    http: aiohttp.ClientSession, rule: dict[str, Any] | None, stream: bool
) -> tuple[int, str, bytes]:
    async with http.post("/vllm/v1/chat/completions", json=body(rule, stream), headers=AUTH) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


def test_malformed_and_trickle_fields_are_checked() -> None:
    assert parse_rule({"malformed": "html", "status": 502}).is_error is False
    assert parse_rule({"trickle_ms": 5}).trickle_ms == 5
    with pytest.raises(DirectiveError, match="malformed"):
        parse_rule({"malformed": "gibberish"})


async def test_malformed_non_streaming_answers(http: aiohttp.ClientSession) -> None:
    status, ctype, data = await raw(http, {"malformed": "bad_json"}, False)
    assert status == 200 and ctype.startswith("application/json")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(data)
    status, ctype, data = await raw(http, {"malformed": "html", "status": 502}, False)
    assert status == 502 and ctype.startswith("text/html") and b"<html" in data
    status, _, data = await raw(http, {"malformed": "error_body", "code": "boom"}, False)
    assert status == 200 and orjson.loads(data)["error"]["code"] == "boom"
    with pytest.raises(aiohttp.ClientPayloadError):
        await raw(http, {"malformed": "truncated_sse"}, False)
    status, _, data = await raw(http, {"malformed": "no_done"}, False)
    assert status == 200 and orjson.loads(data)["choices"]  # no effect without a stream


async def test_malformed_streams(http: aiohttp.ClientSession) -> None:
    _, _, whole = await raw(http, None, True)
    assert whole.endswith(b"data: [DONE]\n\n")
    _, _, data = await raw(http, {"malformed": "no_done"}, True)
    assert data.count(b"\n\n") == whole.count(b"\n\n") - 1  # every event but [DONE]
    assert b"[DONE]" not in data and b'"finish_reason":"stop"' in data
    _, _, data = await raw(http, {"malformed": "bad_json", "cut_after_chunks": 1}, True)
    events = data.split(b"\n\n")
    assert b'"content"' in events[1] and events[2].startswith(b'data: {"id": "broken"')
    assert data.endswith(b"data: [DONE]\n\n")
    _, _, data = await raw(http, {"malformed": "truncated_sse"}, True)
    assert data.count(b"\n\n") == 1 and not data.endswith(b"\n\n")  # role chunk, half an event


async def test_trickle_never_ends_and_the_stream_counters_see_it_go(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    before = await (await http.get("/_sim/streams")).json()
    url = "/vllm/v1/chat/completions"
    async with http.post(url, json=body({"trickle_ms": 20}, True), headers=AUTH) as r:
        got = b""
        while got.count(b'"content"') < 5:
            got += await r.content.readany()
        now = await (await http.get("/_sim/streams")).json()
        assert now["open"] == before["open"] + 1
    for _ in range(100):
        after = await (await http.get("/_sim/streams")).json()
        if after["open"] == before["open"]:
            break
        await asyncio.sleep(0.02)
    assert after["client_gone"] == before["client_gone"] + 1, after
    assert after["open"] == before["open"]


async def test_a_seed_makes_rate_draws_repeatable(http: aiohttp.ClientSession) -> None:
    async def draws() -> list[int]:
        rules = [{"rate": 0.5, "status": 503}]
        await (await http.post("/_sim/faults?seed=7", json=rules)).read()
        return [(await raw(http, None, False))[0] for _ in range(24)]

    first = await draws()
    assert set(first) == {200, 503}
    assert await draws() == first
    async with http.post("/_sim/faults?seed=x", json=[]) as r:
        assert r.status == 400
