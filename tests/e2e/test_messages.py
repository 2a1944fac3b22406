"""Anthropic Messages through a real gateway and simulator, driven by the real ``anthropic`` SDK;
every body and event held to the SDK's types and Anthropic's OpenAPI spec
(tests/support/messages_wire.py).

Create, stream, the tool round trip, thinking and its replay (what the upstream received, via
``/_sim/requests``), count_tokens, the model list in both shapes, ``HEAD /``, both key headers,
``X-GLM-*`` steering and the headers every answer carries, the access log and metrics, and the
request Claude Code sends. Errors: test_messages_errors.py; event sequences:
test_messages_streams.py.

What the translator does is tested on a chat-only host (``X-GLM-Providers: openrouter``): Z.ai
and BigModel take Messages natively (``anthropic_base_url``) and get the body as sent; Claude
Code's request runs against both kinds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest

from tests.support.e2e import (
    AUTH,
    GLM_HEADERS,
    MASTER_KEY,
    assert_glm_headers,
    nonce,
    sim_requests,
    wait_for_log,
)
from tests.support.messages_e2e import (
    BASH,
    KEYED,
    READ,
    SONNET,
    VERSION,
    body,
    lower,
    messages_gateway,
    post,
    request,
    said,
    sdk,
    upstream_bodies,
)
from tests.support.messages_wire import check_message, check_stream
from tests.support.procs import Proc


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with messages_gateway(simulator, tmp_path_factory.mktemp("messages")) as proc:
        yield proc


HOST = {"X-GLM-Providers": "openrouter"}
"""A host that speaks chat only: what these tests prove is the translation (Z.ai and BigModel
take Messages natively; tests/e2e/test_messages_native.py)."""


# --- create and stream -------------------------------------------------------------------------


async def test_create_answers_a_valid_message(gw: Proc, simulator: Proc) -> None:
    tag = nonce()
    async with sdk(gw) as c:
        raw = await c.messages.with_raw_response.create(
            model=SONNET,
            max_tokens=256,
            messages=[{"role": "user", "content": said("hello", tag)}],
            extra_headers=HOST,
        )
    msg = await raw.parse()
    check_message(orjson.loads(raw.http_response.content))
    assert msg.model == SONNET  # the client's name is echoed, not the variant id
    assert msg.role == "assistant" and msg.stop_reason == "end_turn"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text.startswith("Hello from glm-4.7 via openrouter")  # type: ignore[union-attr]
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    h = lower(raw.headers)
    assert_glm_headers(h)
    assert (h["x-glm-variant"], h["x-glm-provider"], h["x-glm-attempts"]) == (
        "glm-4.7",
        "openrouter",
        "1",
    )
    [up] = upstream_bodies(simulator, tag)
    assert up["model"] == "z-ai/glm-4.7" and up["max_tokens"] == 256
    assert up["reasoning"] == {"enabled": False}  # Anthropic's default: no thinking


async def test_stream_accumulates_to_a_valid_message(gw: Proc) -> None:
    tag = nonce()
    async with (
        sdk(gw) as c,
        c.messages.stream(
            model=SONNET,
            max_tokens=256,
            messages=[{"role": "user", "content": said("stream please", tag)}],
            extra_headers=HOST,
        ) as s,
    ):
        texts = [t async for t in s.text_stream]
        final = await s.get_final_message()
    check_message(final.to_dict())
    assert final.stop_reason == "end_turn" and final.model == SONNET
    assert "".join(texts) == final.content[0].text  # type: ignore[union-attr]
    assert final.content[0].text.startswith("Hello from glm-4.7 via openrouter")  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0

    r = await post(gw, body(said("raw stream", nonce()), stream=True), HOST)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert_glm_headers(r.headers)
    events, snap = check_stream(r.content)
    assert snap.stop_reason == "end_turn"
    assert events[1][0] == "ping"  # right after message_start


async def test_beta_query_is_the_same_endpoint(gw: Proc) -> None:
    r = await post(
        gw, body("hi"), {"anthropic-beta": "claude-code-20250219"}, "/v1/messages?beta=true"
    )
    assert r.status_code == 200, r.text
    check_message(r.json())


# --- tools ---------------------------------------------------------------------------------


async def test_tool_round_trip(gw: Proc, simulator: Proc) -> None:
    tag = nonce()
    rule = {"tool_call": {"name": "Bash", "arguments": {"command": "ls -la /tmp"}}}
    messages: list[Any] = [{"role": "user", "content": said("list /tmp", tag, rule)}]
    async with sdk(gw) as c:
        first = await c.messages.create(
            model=SONNET,
            max_tokens=512,
            messages=messages,
            tools=[READ, BASH],
            extra_headers=HOST,
        )
        check_message(first.to_dict())
        assert first.stop_reason == "tool_use"
        [use] = [b for b in first.content if b.type == "tool_use"]
        assert use.name == "Bash" and use.input == {"command": "ls -la /tmp"}  # parsed, an object
        assert use.id.startswith("toolu_")
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "a b c"}],
            },
        ]
        second = await c.messages.create(
            model=SONNET,
            max_tokens=512,
            messages=messages,
            tools=[READ, BASH],
            extra_headers=HOST,
        )
    check_message(second.to_dict())
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    _, replay = upstream_bodies(simulator, tag)
    call = replay["messages"][1]["tool_calls"][0]
    result = replay["messages"][2]
    assert json.loads(call["function"]["arguments"]) == {"command": "ls -la /tmp"}
    assert (result["role"], result["content"]) == ("tool", "a b c")
    assert result["tool_call_id"] == call["id"]  # the host's own id came back
    assert [t["function"]["name"] for t in replay["tools"]] == ["Read", "Bash"]


async def test_streamed_tool_use_ends_tool_use(gw: Proc) -> None:
    tag = nonce()
    rule = {"tool_call": {"name": "Read", "arguments": {"path": "/etc/hosts"}}}
    r = await post(gw, body(said("read it", tag, rule), stream=True, tools=[BASH, READ]), HOST)
    events, snap = check_stream(r.content)
    assert snap.stop_reason == "tool_use"
    [use] = snap.content
    assert (use.type, use.name, use.input) == ("tool_use", "Read", {"path": "/etc/hosts"})
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert [d["type"] for d in deltas] == ["input_json_delta"]


# --- thinking and its replay -------------------------------------------------------------------


THINKING = {"type": "enabled", "budget_tokens": 2048}


async def _thinking_turn(c: anthropic.AsyncAnthropic, tag: str, stream: bool) -> Any:
    rule = {"tool_call": {"name": "Bash", "arguments": {"command": "pwd"}}}
    kw: dict[str, Any] = {
        "model": SONNET,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": said("where am I", tag, rule)}],
        "tools": [BASH],
        "thinking": THINKING,
        "extra_headers": HOST,
    }
    if not stream:
        return await c.messages.create(**kw)
    async with c.messages.stream(**kw) as s:
        return await s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_thinking_then_tool_use_replays_unmodified(
    gw: Proc, simulator: Proc, stream: bool
) -> None:
    tag = nonce()
    async with sdk(gw) as c:
        first = await _thinking_turn(c, tag, stream)
        check_message(first.to_dict())
        assert [b.type for b in first.content] == ["thinking", "tool_use"]
        assert first.stop_reason == "tool_use"
        thought = first.content[0]
        assert thought.thinking and thought.signature.startswith("glmgw1.")
        use = first.content[1]
        replay: list[Any] = [
            {"role": "user", "content": said("where am I", tag)},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "/root"}],
            },
        ]
        raw = await c.messages.with_raw_response.create(
            model=SONNET,
            max_tokens=4096,
            messages=replay,
            tools=[BASH],
            thinking=THINKING,
            extra_headers=HOST,
        )
    second = await raw.parse()
    check_message(orjson.loads(raw.http_response.content))
    assert [b.type for b in second.content] == ["thinking", "text"]
    assert "messages.thinking" not in lower(raw.headers).get("x-glm-ignored", "")  # verified
    up = upstream_bodies(simulator, tag)[-1]
    assistant = [m for m in up["messages"] if m["role"] == "assistant"]
    assert len(assistant) == 1
    assert assistant[0]["reasoning_content"] == thought.thinking  # unmodified
    roles = [m["role"] for m in up["messages"]]
    assert roles == ["user", "assistant", "tool"]  # in order: reasoning, call, then its result
    assert up["reasoning"] == {"enabled": True}


@pytest.mark.parametrize("tamper", ["text", "signature", "foreign"])
async def test_tampered_thinking_is_dropped_and_named(
    gw: Proc, simulator: Proc, tamper: str
) -> None:
    tag = nonce()
    async with sdk(gw) as c:
        first = await _thinking_turn(c, tag, stream=False)
    blocks = [b.model_dump() for b in first.content]
    if tamper == "text":
        blocks[0]["thinking"] += " (edited)"
    elif tamper == "signature":
        blocks[0]["signature"] = blocks[0]["signature"][:-4] + "AAA="
    else:  # a block Anthropic signed: not this gateway's
        blocks[0]["signature"] = "EqQBCkgIARABGAIiQL" + "x" * 60
    use_id = blocks[1]["id"]
    replay = [
        {"role": "user", "content": said("where am I", tag)},
        {"role": "assistant", "content": blocks},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use_id, "content": "/"}],
        },
    ]
    r = await post(gw, body("", messages=replay, tools=[BASH], thinking=THINKING), HOST)
    assert r.status_code == 200, r.text
    check_message(r.json())
    assert "messages.thinking=unverified:1" in r.headers["x-glm-ignored"].split(",")
    up = upstream_bodies(simulator, tag)[-1]
    assistant = next(m for m in up["messages"] if m["role"] == "assistant")
    assert "reasoning_content" not in assistant  # never reaches GLM as the model's own
    assert assistant["tool_calls"][0]["function"]["name"] == "Bash"


async def test_thinking_then_text_stream(gw: Proc) -> None:
    r = await post(gw, body(said("think first", nonce()), stream=True, thinking=THINKING), HOST)
    events, snap = check_stream(r.content)
    assert [b.type for b in snap.content] == ["thinking", "text"]
    kinds = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert kinds[0] == "thinking_delta" and "signature_delta" in kinds
    assert kinds.index("signature_delta") < kinds.index("text_delta")


# --- count_tokens, models, HEAD, keys ----------------------------------------------------


async def test_count_tokens(gw: Proc) -> None:
    async with sdk(gw) as c:
        small = await c.messages.count_tokens(
            model=SONNET, messages=[{"role": "user", "content": "hi"}]
        )
        big = await c.messages.count_tokens(
            model=SONNET,
            system="You are terse. " * 200,
            messages=[{"role": "user", "content": "hi " * 500}],
            tools=[BASH, READ],
        )
    assert 0 < small.input_tokens < big.input_tokens
    assert big.input_tokens >= 500
    r = await post(gw, {"model": SONNET, "messages": []}, path="/v1/messages/count_tokens")
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"


async def test_models_list_in_both_shapes(gw: Proc) -> None:
    async with sdk(gw) as c:
        page = await c.models.list(limit=1000)
    ids = [m.id for m in page.data]
    assert {"claude-opus", "claude-sonnet", "claude-haiku"} <= set(ids)
    assert "glm-4.7" in ids and all(m.type == "model" for m in page.data)
    assert ids.index("claude-sonnet") < ids.index("glm-4.7")  # Claude Code keeps claude* only
    r = await request(gw, "GET", "/v1/models?limit=1000", headers=KEYED)
    assert r.json()["first_id"] == ids[0] and r.json()["has_more"] is False
    openai_shape = (await request(gw, "GET", "/v1/models", headers=AUTH)).json()
    assert openai_shape["object"] == "list"
    assert {m["object"] for m in openai_shape["data"]} == {"model"}
    assert "auto" in {m["id"] for m in openai_shape["data"]}


async def test_head_root(gw: Proc) -> None:
    r = await request(gw, "HEAD", "/")
    assert r.status_code == 200


async def test_both_key_headers_are_accepted(gw: Proc) -> None:
    for bearer in (False, True):
        async with sdk(gw, bearer=bearer) as c:
            msg = await c.messages.create(
                model=SONNET, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
            )
        check_message(msg.to_dict())
    r = await request(gw, "POST", "/v1/messages", json=body("hi"), headers={**AUTH, **VERSION})
    assert r.status_code == 200


# --- steering and the headers every answer carries ---------------------------------------------


async def test_glm_headers_steer_messages(gw: Proc, simulator: Proc) -> None:
    tag = nonce()
    r = await post(
        gw, body(said("hi", tag), model="claude-haiku-4-5"), {"X-GLM-Providers": "novita"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-glm-provider"] == "novita"
    assert [q["provider"] for q in sim_requests(simulator, tag)] == ["novita"]

    r = await post(gw, body("hi"), {"X-GLM-Capabilities": "vision"})
    assert r.status_code == 200, r.text
    assert r.headers["x-glm-variant"] in ("glm-4.6v", "glm-4.5v")

    r = await post(gw, body("hi"), {"X-GLM-Providers": "nope"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


async def test_every_answer_carries_the_glm_headers(gw: Proc) -> None:
    cases = [
        body("ok"),
        body("ok", stream=True),
        {"model": SONNET, "messages": [{"role": "user", "content": "no max_tokens"}]},
        body("unknown model", model="gpt-4o"),
    ]
    for case in cases:
        rid = "req-msg-" + nonce()
        r = await post(gw, case, {"X-Request-Id": rid})
        h = lower(r.headers)
        assert all(h.get(k) for k in GLM_HEADERS), (r.status_code, h)
        assert h["x-request-id"] == rid


async def test_access_log_and_metrics_say_messages(gw: Proc) -> None:
    rid = "req-log-" + nonce()
    r = await post(gw, body("log me"), {"X-Request-Id": rid})
    assert r.status_code == 200
    rec = await wait_for_log(gw, rid)
    assert rec is not None and rec["api"] == "messages" and rec["status"] == 200
    metrics = (await request(gw, "GET", "/metrics")).text
    lines = [
        ln
        for ln in metrics.splitlines()
        if ln.startswith("glm_gateway_requests_total{") and 'api="messages"' in ln
    ]
    assert lines, "no glm_gateway_requests_total series with api=messages"


# --- what Claude Code sends --------------------------------------------------------------------

CLAUDE_CODE_BETAS = (
    "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14,"
    "thinking-token-count-2026-05-13,context-management-2025-06-27,"
    "prompt-caching-scope-2026-01-05,mid-conversation-system-2026-04-07,effort-2025-11-24"
)
CC_TOOLS = ["Agent", "Bash", "Edit", "Read", "Write", "WebFetch", "WebSearch", "Task", "Glob"]


def claude_code_body(text: str) -> dict[str, Any]:
    names = CC_TOOLS + [f"Tool{i}" for i in range(24 - len(CC_TOOLS))]
    tools = [
        {
            "name": n,
            "description": f"The {n} tool.",
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "$schema": "http://json-schema.org/draft-07/schema#",
                "additionalProperties": False,
            },
        }
        for n in names
    ]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    return {
        "model": "claude-opus-4-8",
        "max_tokens": 64000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"},
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "Be brief. " * 300, "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": text, "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
        "tools": tools,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {
            "user_id": json.dumps({"device_id": "d" * 64, "session_id": "0f6e-4a4b-9c1d"}),
        },
    }


@pytest.mark.parametrize("host", ["native", "translated"])
async def test_the_claude_code_request_is_answered(gw: Proc, simulator: Proc, host: str) -> None:
    """No model settings, as ``claude -p`` sends it: ``claude-opus-4-8`` goes to the ``best``
    alias; Z.ai takes it natively, a chat-only host through the translator."""
    tag = nonce()
    rule = {"tool_call": {"name": "Bash", "arguments": {"command": "git status"}}}
    headers = {
        "Authorization": f"Bearer {MASTER_KEY}",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": CLAUDE_CODE_BETAS,
        "x-app": "cli",
        "x-claude-code-session-id": "2b0c6f1e-1d7a-4c5e-9f43-8d7f4b2a9e10",
        "User-Agent": "claude-cli/2.1.197 (external, cli)",
        "content-type": "application/json",
        "X-GLM-Providers": "zai" if host == "native" else "openrouter",
    }
    raw = orjson.dumps(claude_code_body(said("what changed?", tag, rule)))
    r = await request(gw, "POST", "/v1/messages?beta=true", content=raw, headers=headers)
    assert r.status_code == 200, r.text
    assert_glm_headers(r.headers)
    _, snap = check_stream(r.content)
    assert snap.stop_reason == "tool_use"
    assert [b.type for b in snap.content][-1] == "tool_use"
    assert snap.content[-1].input == {"command": "git status"}
    [seen] = sim_requests(simulator, tag)
    up = seen["body"]
    forwarded = {k.lower(): v for k, v in seen["headers"].items()}
    assert len(up["tools"]) == 24
    assert up["max_tokens"] == 32000  # clamped for both kinds of host (the plan assumed it)
    if host == "native":
        assert seen["path"] == "/zai/anthropic/v1/messages"
        assert "api=messages:native" in r.headers["x-glm-adapted"]
        assert up["thinking"] == {"type": "adaptive"}  # as sent
        assert forwarded["anthropic-beta"] == CLAUDE_CODE_BETAS
        assert "x-claude-code-session-id" not in forwarded
        return
    ignored = r.headers["x-glm-ignored"].split(",")
    for hint in ("cache_control", "output_config.effort", "context_management"):
        assert f"{hint}=ignored" in ignored, ignored
    assert up["reasoning"] == {"enabled": True}
    sent = orjson.dumps(up).decode()
    for leaked in ("context_management", "output_config", "cache_control", "clear_thinking"):
        assert leaked not in sent, leaked  # Anthropic-only hints stay at the gateway
    assert not set(forwarded) & {"anthropic-beta", "anthropic-version", "x-claude-code-session-id"}
