"""Streaming: the commit point on both sides, and client disconnects.

Before the first content token a failing or slow upstream is replaced invisibly (the client sees
one clean stream); after it, a failure ends the stream with an error event and no ``[DONE]``,
so the SDK raises. A client that goes away is logged as 499 and the upstream is let go.

Own gateway: ``ttft_timeout_s`` is short so slow first tokens fall over quickly, and breakers
open only on explicit cooldowns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from tests.support.e2e import (
    AUTH,
    GATEWAY_ENV,
    assert_error_shape,
    assert_glm_headers,
    chat_body,
    directive,
    gateway_yaml,
    module_gateway,
    nonce,
    parse_sse,
    sdk_client,
    text_msg,
    upstream_hits,
    wait_for_log,
)
from tests.support.procs import Proc, config_copy, start_gateway

TTFT_S = 3.0
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def st_gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(
        simulator,
        tmp_path_factory.mktemp("stream"),
        routing={"ttft_timeout_s": TTFT_S},
        breaker={"failure_threshold": 1000},
    ) as gw:
        yield gw


@pytest_asyncio.fixture
async def st(st_gateway: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_client(st_gateway) as c:
        yield c


async def sdk_stream(
    c: openai.AsyncOpenAI, text: str, model: str, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[list[Any], dict[str, str]]:
    raw = await c.chat.completions.with_raw_response.create(
        model=model, messages=text_msg(text), stream=True, extra_headers=headers or {}, **kw
    )
    hdrs = {k.lower(): v for k, v in raw.headers.items()}
    assert_glm_headers(hdrs)
    chunks = [chunk async for chunk in raw.parse()]
    return chunks, hdrs


def content_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def raw_stream(
    gw: Proc, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, httpx.Headers, list[Any]]:
    async with (
        httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=60) as c,
        c.stream("POST", CHAT, json={**body, "stream": True}, headers=headers or {}) as r,
    ):
        raw = (await r.aread()).decode()
        return r.status_code, r.headers, parse_sse(raw)


# --- the happy path --------------------------------------------------------------------------


async def test_stream_relays_chunks_and_headers(st: openai.AsyncOpenAI) -> None:
    rid = "req-stream-" + nonce()
    chunks, h = await sdk_stream(
        st, "tell me", "glm-4-32b", {"X-Request-Id": rid, "X-GLM-Providers": "zai"}
    )
    assert h["x-request-id"] == rid
    assert (h["x-glm-variant"], h["x-glm-provider"], h["x-glm-attempts"]) == (
        "glm-4-32b",
        "zai",
        "1",
    )
    assert "x-glm-fallback-reason" not in h
    assert h["content-type"].startswith("text/event-stream")
    assert content_of(chunks).startswith("Hello from glm-4-32b")
    assert all(c.model == "glm-4-32b" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and not any(finishes[:-1])


async def test_stream_ends_with_done(st_gateway: Proc) -> None:
    status, _, events = await raw_stream(
        st_gateway, chat_body(text_msg("hi"), model="glm-4.6"), {"X-GLM-Providers": "openrouter"}
    )
    assert status == 200
    assert events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and "error" in e for e in events)
    # openrouter's "reasoning" is normalised to reasoning_content, model to the variant id
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e.get("choices")]
    assert any("reasoning_content" in d for d in deltas)
    assert not any("reasoning" in d for d in deltas)
    assert {e["model"] for e in events[:-1]} == {"glm-4.6"}


# --- before the first content token: invisible --------------------------------------------------


async def test_error_status_before_commit_falls_over_invisibly(
    st: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    fail = directive({"match": {"provider": "zai"}, "status": 500}, tag)
    chunks, h = await sdk_stream(
        st, f"hi {tag} {fail}", "glm-4.7", {"X-GLM-Providers": "zai,bigmodel"}
    )
    assert h["x-glm-provider"] == "bigmodel"
    assert h["x-glm-attempts"] == "3"
    assert "zai/glm-4.7 transient 500" in h["x-glm-fallback-reason"]
    assert content_of(chunks).startswith("Hello from glm-4.7 via bigmodel")
    assert [p for p, _ in upstream_hits(simulator, tag)] == ["zai", "zai", "bigmodel"]


async def test_slow_first_token_falls_over_invisibly(
    st: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    slow = directive({"match": {"provider": "together"}, "ttft_ms": TTFT_S * 4000}, tag)
    chunks, h = await sdk_stream(
        st, f"hi {tag} {slow}", "glm-4.6", {"X-GLM-Providers": "together,fireworks"}
    )
    assert h["x-glm-provider"] == "fireworks"
    assert h["x-glm-attempts"] == "2"
    assert "together/glm-4.6 timeout" in h["x-glm-fallback-reason"]
    assert "via fireworks" in content_of(chunks)
    assert not any(
        "via together" in (c.choices[0].delta.content or "") for c in chunks if c.choices
    )


async def test_cut_before_first_content_falls_over_invisibly(
    st: openai.AsyncOpenAI, simulator: Proc
) -> None:
    # glm-4-32b does not think: with no content chunk sent, the role chunk alone is not a commit
    tag = nonce()
    cut = directive({"match": {"provider": "zai"}, "cut_after_chunks": 0}, tag)
    chunks, h = await sdk_stream(
        st, f"hi {tag} {cut}", "glm-4-32b", {"X-GLM-Providers": "zai,openrouter"}
    )
    assert h["x-glm-provider"] == "openrouter"
    assert "zai/glm-4-32b transient" in h["x-glm-fallback-reason"]
    assert content_of(chunks).startswith("Hello from glm-4-32b via openrouter")
    roles = [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role]
    assert roles == ["assistant"]  # the failed attempt's role chunk was not relayed


async def test_all_fail_before_commit_is_an_http_error(st: openai.AsyncOpenAI) -> None:
    tag = nonce()
    fail = directive({"match": {"variant": "glm-4-9b"}, "status": 500}, tag)
    with pytest.raises(openai.APIStatusError) as ei:
        await st.chat.completions.create(
            model="glm-4-9b", messages=text_msg(f"hi {tag} {fail}"), stream=True
        )
    assert ei.value.status_code == 502
    assert_glm_headers(ei.value.response.headers)
    assert ei.value.response.headers["content-type"].startswith("application/json")
    assert assert_error_shape(ei.value.response.json())["code"] == "all_candidates_failed"


async def test_deadline_before_first_token_is_504(st_gateway: Proc) -> None:
    tag = nonce()
    slow = directive({"ttft_ms": 5000}, tag)
    async with httpx.AsyncClient(base_url=st_gateway.url, headers=AUTH, timeout=60) as c:
        r = await c.post(
            CHAT,
            json=chat_body(text_msg(f"hi {tag} {slow}"), model="glm-4.5", stream=True),
            headers={"X-GLM-Timeout": "1", "X-GLM-Providers": "fireworks,deepinfra"},
        )
    assert r.status_code == 504
    assert_glm_headers(r.headers)
    assert assert_error_shape(r.json())["code"] == "deadline_exceeded"


# --- after the first content token: an error event, never a clean [DONE] --------------------------


async def test_cut_after_content_ends_with_an_error_event(
    st_gateway: Proc, st: openai.AsyncOpenAI
) -> None:
    tag = nonce()
    cut = directive({"match": {"provider": "zai"}, "cut_after_chunks": 2}, tag)
    body = chat_body(text_msg(f"hi {tag} {cut}"), model="glm-4-32b")
    headers = {"X-GLM-Providers": "zai,openrouter"}
    status, h, events = await raw_stream(st_gateway, body, headers)
    assert status == 200
    assert h["x-glm-provider"] == "zai"  # committed: no fallover after content
    assert "[DONE]" not in events
    contents = [e["choices"][0]["delta"].get("content") for e in events[:-1] if e.get("choices")]
    assert len([c for c in contents if c]) == 2
    err = assert_error_shape(events[-1])
    assert err["code"] == "stream_interrupted"
    assert "zai" in err["message"]

    # the SDK raises instead of returning a truncated answer as if it were complete
    tag2 = nonce()
    cut2 = directive({"match": {"provider": "zai"}, "cut_after_chunks": 2}, tag2)
    got: list[str] = []
    stream = await st.chat.completions.create(
        model="glm-4-32b",
        messages=text_msg(f"hi {tag2} {cut2}"),
        stream=True,
        extra_headers=headers,
    )
    with pytest.raises(openai.APIError) as ei:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert len(got) == 2
    assert "zai" in ei.value.message


async def test_network_error_finish_after_content_is_an_error_event(st_gateway: Proc) -> None:
    tag = nonce()
    rule = {"match": {"provider": "zai"}, "cut_after_chunks": 1, "finish_reason": "network_error"}
    body = chat_body(text_msg(f"hi {tag} {directive(rule, tag)}"), model="glm-4-32b")
    status, _, events = await raw_stream(st_gateway, body, {"X-GLM-Providers": "zai"})
    assert status == 200
    assert "[DONE]" not in events
    err = assert_error_shape(events[-1])
    assert err["code"] == "stream_interrupted" and "network_error" in err["message"]
    finishes = [e["choices"][0].get("finish_reason") for e in events[:-1] if e.get("choices")]
    assert "network_error" not in finishes  # the host's bad finish is not relayed as a finish


async def test_reasoning_is_the_commit_point_for_thinking_models(st_gateway: Proc) -> None:
    # glm-4.7 thinks: its reasoning reaches the client before any answer text, so a cut after
    # the reasoning (0 content chunks) can no longer be hidden
    tag = nonce()
    cut = directive({"match": {"provider": "zai"}, "cut_after_chunks": 0}, tag)
    body = chat_body(text_msg(f"hi {tag} {cut}"), model="glm-4.7")
    status, h, events = await raw_stream(st_gateway, body, {"X-GLM-Providers": "zai,bigmodel"})
    assert status == 200 and h["x-glm-provider"] == "zai"
    assert any(
        e.get("choices") and e["choices"][0]["delta"].get("reasoning_content") for e in events[:-1]
    )
    assert "[DONE]" not in events
    assert assert_error_shape(events[-1])["code"] == "stream_interrupted"


async def test_committed_failure_is_logged(st_gateway: Proc) -> None:
    tag = nonce()
    rid = "req-cut-" + tag
    cut = directive({"match": {"provider": "zai"}, "cut_after_chunks": 1}, tag)
    body = chat_body(text_msg(f"hi {tag} {cut}"), model="glm-4-32b")
    await raw_stream(st_gateway, body, {"X-GLM-Providers": "zai", "X-Request-Id": rid})
    rec = await wait_for_log(st_gateway, rid)
    assert rec["status"] == 502 and rec["stream"] is True
    assert rec["error"].startswith("stream_")


# --- client disconnects ----------------------------------------------------------------------


async def assert_healthy(gw: Proc) -> None:
    async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.post(CHAT, json=chat_body(text_msg("still there?")))
        assert r.status_code == 200, r.text


async def test_disconnect_mid_stream_is_499(st_gateway: Proc, simulator: Proc) -> None:
    tag = nonce()
    rid = "req-gone-" + tag
    slow = directive({"match": {"provider": "zai"}, "chunk_delay_ms": 400}, tag)
    body = chat_body(text_msg(f"a long answer please {tag} {slow}"), model="glm-4-32b", stream=True)
    got_content = False
    async with (
        httpx.AsyncClient(base_url=st_gateway.url, headers=AUTH, timeout=60) as c,
        c.stream(
            "POST", CHAT, json=body, headers={"X-Request-Id": rid, "X-GLM-Providers": "zai"}
        ) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data:") and '"content"' in line:
                got_content = True
                break  # leave with the answer half sent: closes the connection
    assert got_content
    rec = await wait_for_log(st_gateway, rid)
    assert rec["status"] == 499
    assert rec["error"] == "client_disconnected"
    assert rec["provider"] == "zai"
    await assert_healthy(st_gateway)


async def test_disconnect_while_upstream_hangs_is_499(st_gateway: Proc, simulator: Proc) -> None:
    for stream in (False, True):
        tag = nonce()
        rid = f"req-hang-{stream}-{tag}"
        hang = directive({"match": {"provider": "zai"}, "hang": True}, tag)
        body = chat_body(text_msg(f"hi {tag} {hang}"), model="glm-4-32b", stream=stream)
        async with httpx.AsyncClient(base_url=st_gateway.url, headers=AUTH, timeout=1.0) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.post(
                    CHAT, json=body, headers={"X-Request-Id": rid, "X-GLM-Providers": "zai"}
                )
        rec = await wait_for_log(st_gateway, rid)
        assert rec["status"] == 499, rec
        assert rec["error"] == "client_disconnected"
        assert upstream_hits(simulator, tag) == [("zai", "glm-4-32b-0414-128k")]
    await assert_healthy(st_gateway)


# --- does the upstream see the cancellation? (a probe host that records it) ---------------------


class Probe:
    """A tiny OpenAI-compatible host that records when a request's handler is cancelled."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def saw(self, tag: str) -> list[str]:
        return [what for t, what in self.events if t == tag]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tag = str(body["messages"][-1]["content"])
        self.events.append((tag, "start"))
        try:
            if not body.get("stream"):
                await asyncio.sleep(60)
                return web.json_response({"error": {"message": "too late"}}, status=500)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(600):
                chunk = {
                    "id": "probe",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "probe-9b",
                    "choices": [
                        {"index": 0, "delta": {"content": f"tick {i} "}, "finish_reason": None}
                    ],
                }
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                await asyncio.sleep(0.1)
            return resp
        except (asyncio.CancelledError, ConnectionError):
            self.events.append((tag, "cancelled"))
            raise
        finally:
            self.events.append((tag, "ended"))


@pytest_asyncio.fixture(scope="module")
async def probe_host() -> AsyncIterator[tuple[Probe, str]]:
    probe = Probe()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", probe.chat)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield probe, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


@pytest.fixture(scope="module")
def probe_gateway(
    probe_host: tuple[Probe, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("probe")
    cfg = config_copy(tmp, gateway_yaml())
    providers = {
        "providers": {
            "probe": {
                "name": "Probe host",
                "base_url": probe_host[1],
                "api_key_env": None,
                "deployments": [{"variant": "glm-4-9b", "model": "probe-9b"}],
            }
        }
    }
    (cfg / "providers.yaml").write_text(yaml.safe_dump(providers))
    proc = start_gateway(None, cfg, env=GATEWAY_ENV)
    yield proc
    proc.stop()


async def wait_until(cond: Any, within_s: float = 20.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return bool(cond())


async def test_disconnect_cancels_the_upstream_request(
    probe_gateway: Proc, probe_host: tuple[Probe, str]
) -> None:
    probe, _ = probe_host
    # streaming, committed: the client leaves after the first content chunk
    tag = "stream-" + nonce()
    async with (
        httpx.AsyncClient(base_url=probe_gateway.url, headers=AUTH, timeout=60) as c,
        c.stream("POST", CHAT, json=chat_body(text_msg(tag), model="glm-4-9b", stream=True)) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if "tick 0" in line:
                break
    assert await wait_until(lambda: "cancelled" in probe.saw(tag)), probe.saw(tag)

    # non-streaming, the host has not answered yet
    tag = "hang-" + nonce()
    async with httpx.AsyncClient(base_url=probe_gateway.url, headers=AUTH, timeout=1.0) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(CHAT, json=chat_body(text_msg(tag), model="glm-4-9b"))
    assert await wait_until(lambda: "cancelled" in probe.saw(tag)), probe.saw(tag)

    # non-streaming, the client leaves a few ms in: before the gateway's disconnect watcher
    # starts (WATCH_AFTER_S); it is noticed when the watcher starts
    tag = "early-" + nonce()
    early = httpx.Timeout(5.0, read=0.003)
    async with httpx.AsyncClient(base_url=probe_gateway.url, headers=AUTH, timeout=early) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(CHAT, json=chat_body(text_msg(tag), model="glm-4-9b"))
    assert await wait_until(lambda: "cancelled" in probe.saw(tag)), probe.saw(tag)
    async with httpx.AsyncClient(base_url=probe_gateway.url, timeout=30) as c:
        assert (await c.get("/healthz")).status_code == 200
