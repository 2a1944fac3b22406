"""Golden Messages event sequences through the real gateway (what "broke elsewhere" in
/work/shared/research/agent-apis.md): every stream checked event by event
(tests/support/messages_wire.py: SDK types, the spec, block discipline, indices from 0) and its
outline compared with the expected one.

The simulator answers one tool call per turn and never text *and* a tool call, so parallel tool
calls and text-then-tool run against a scripted host (:class:`ScriptHost`, an OpenAI-compatible
server in this process that streams exactly the chunks a test gives it, interleaved argument
fragments and all) behind a gateway of its own. Fallback before the first byte and failures
after it run on chat-only hosts, on hosts that speak Messages natively, and across the two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from tests.support.e2e import (
    GATEWAY_ENV,
    assert_glm_headers,
    gateway_yaml,
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
    messages_gateway,
    post,
    request,
    said,
    sdk,
)
from tests.support.messages_wire import check_stream
from tests.support.procs import Proc, config_copy, start_gateway


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with messages_gateway(simulator, tmp_path_factory.mktemp("msg-streams")) as proc:
        yield proc


def outline(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Event names with the block / delta type and the stop reason; a run of one delta type
    is one entry."""
    out: list[str] = []
    for name, data in events:
        if name == "content_block_start":
            item = f"start:{data['content_block']['type']}"
        elif name == "content_block_delta":
            item = data["delta"]["type"]
        elif name == "content_block_stop":
            item = "stop"
        elif name == "message_delta":
            item = f"message_delta:{data['delta']['stop_reason']}"
        elif name == "error":
            item = f"error:{data['error']['type']}"
        else:
            item = name
        if not out or out[-1] != item or name != "content_block_delta":
            out.append(item)
    return out


HEAD = ["message_start", "ping"]
END_TURN = ["message_delta:end_turn", "message_stop"]


async def stream(proc: Proc, payload: dict[str, Any], headers: dict[str, str]) -> Any:
    r = await post(proc, {**payload, "stream": True}, headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert_glm_headers(r.headers)
    events, snap = check_stream(r.content)
    return r, events, snap


HOST = {"X-GLM-Providers": "openrouter"}
"""A chat-only host: these goldens are the translator's (Z.ai and BigModel speak Messages
natively and get the client's events back untranslated)."""


# --- the simulator -----------------------------------------------------------------------------


async def test_plain_text(gw: Proc) -> None:
    _, events, snap = await stream(gw, body(said("hi", nonce())), HOST)
    assert outline(events) == [*HEAD, "start:text", "text_delta", "stop", *END_TURN]
    assert snap.content[0].text.startswith("Hello from glm-4.7 via openrouter")


async def test_thinking_then_text(gw: Proc) -> None:
    payload = body(said("hi", nonce()), thinking={"type": "enabled", "budget_tokens": 1024})
    _, events, snap = await stream(gw, payload, HOST)
    assert outline(events) == [
        *HEAD,
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:text", "text_delta", "stop",
        *END_TURN,
    ]  # fmt: skip
    assert snap.content[0].signature.startswith("glmgw1.")


async def test_thinking_then_tool_call(gw: Proc) -> None:
    rule = {"tool_call": {"name": "Bash", "arguments": {"command": "make test"}}}
    payload = body(
        said("test it", nonce(), rule), thinking={"type": "adaptive"}, tools=[READ, BASH]
    )
    _, events, snap = await stream(gw, payload, HOST)
    assert outline(events) == [
        *HEAD,
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta:tool_use", "message_stop",
    ]  # fmt: skip
    assert snap.content[1].input == {"command": "make test"}


async def test_max_tokens(gw: Proc) -> None:
    payload = body(said("tell me a long story about " + "words " * 30, nonce()), max_tokens=3)
    _, events, snap = await stream(gw, payload, HOST)
    assert outline(events) == [
        *HEAD, "start:text", "text_delta", "stop", "message_delta:max_tokens", "message_stop"
    ]  # fmt: skip
    assert snap.stop_reason == "max_tokens" and snap.stop_sequence is None


async def test_stop_sequence(gw: Proc) -> None:
    rule = {"content": "one two three DONE"}
    payload = body(said("count", nonce(), rule), stop_sequences=["DONE", "###"])
    _, events, snap = await stream(gw, payload, HOST)
    assert outline(events)[-2:] == ["message_delta:stop_sequence", "message_stop"]
    assert (snap.stop_reason, snap.stop_sequence) == ("stop_sequence", "DONE")
    r = await post(gw, payload, HOST)  # and not streamed
    assert (r.json()["stop_reason"], r.json()["stop_sequence"]) == ("stop_sequence", "DONE")


PAIRS = {
    "translated": ("openrouter", "together"),
    "native": ("zai", "bigmodel"),
    "native-then-translated": ("zai", "openrouter"),
}
"""A first and a second host for glm-4.7: both chat-only, both speaking Messages natively,
and a fallback across the two kinds."""


@pytest.mark.parametrize("pair", list(PAIRS))
async def test_failure_before_the_first_byte_is_invisible(
    gw: Proc, simulator: Proc, pair: str
) -> None:
    first, second = PAIRS[pair]
    tag = nonce()
    # a first token slower than routing.ttft_timeout_s (3 s): a timeout, which opens no circuit
    rule = {"match": {"provider": first}, "ttft_ms": 8000}
    headers = {"X-GLM-Providers": f"{first},{second}"}
    r, events, snap = await stream(gw, body(said("hi", tag, rule), model="glm-4.7"), headers)
    assert [e for e in outline(events) if e != "ping"] == [
        "message_start", "start:text", "text_delta", "stop", *END_TURN
    ]  # fmt: skip
    text = snap.content[0].text
    assert f"via {second}" in text and f"via {first}" not in text
    assert (r.headers["x-glm-provider"], r.headers["x-glm-attempts"]) == (second, "2")
    assert f"{first}/glm-4.7 timeout" in r.headers["x-glm-fallback-reason"]
    assert [q["provider"] for q in sim_requests(simulator, tag)] == [first, second]


FAULTS = {
    "cut": {"cut_after_chunks": 2},
    "network_error": {"cut_after_chunks": 2, "finish_reason": "network_error"},
    "stream_error": {
        "stream_error": {"code": "1234", "message": "fell over"},
        "cut_after_chunks": 2,
    },
    "no_done": {"malformed": "no_done", "cut_after_chunks": 2},  # a clean close, half an answer
    "truncated_sse": {"malformed": "truncated_sse", "cut_after_chunks": 2},
}


@pytest.mark.parametrize(
    ("fault", "host"),
    [(f, h) for f in FAULTS for h in ("openrouter", "zai")],
)
async def test_failure_after_the_first_byte_is_an_error_event(
    gw: Proc, fault: str, host: str
) -> None:
    tag = nonce()
    rid = "req-cut-" + tag
    rule = {"match": {"provider": host}, **FAULTS[fault]}
    headers = {"X-GLM-Providers": f"{host},together", "X-Request-Id": rid}
    r, events, snap = await stream(gw, body(said("hi", tag, rule), model="glm-4.7"), headers)
    assert snap is None  # check_stream: an error ended it
    names = [e for e in outline(events) if e != "ping"]
    assert names[:3] == ["message_start", "start:text", "text_delta"]
    assert names[-1] == "error:api_error" and "message_stop" not in names
    assert r.headers["x-glm-provider"] == host  # committed: no fallover after content
    rec = await wait_for_log(gw, rid)
    assert rec["status"] == 502 and rec["api"] == "messages"

    # the SDK raises instead of handing back half an answer as a message
    tag = nonce()
    rule = {"match": {"provider": host}, **FAULTS[fault]}
    got: list[str] = []
    async with sdk(gw) as c:
        with pytest.raises(anthropic.APIError):
            async with c.messages.stream(
                model="glm-4.7",
                max_tokens=256,
                messages=[{"role": "user", "content": said("hi", tag, rule)}],
                extra_headers=headers,
            ) as s:
                async for text in s.text_stream:
                    got.append(text)
                await s.get_final_message()
    assert got  # the text before the cut arrived


async def test_long_context_suffix_is_a_context_need(gw: Proc) -> None:
    payload = body("hi", model="claude-sonnet-4-5[1m]")
    r = await request(gw, "POST", "/v1/route", json=payload, headers=KEYED)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["needs"]["context"]["declared_min"] == 200_000
    variants = {c["variant"] for c in out["candidates"]}
    assert variants and variants <= {"glm-4.7"}  # the coding alias's 200k variant
    r = await post(gw, payload)
    assert r.status_code == 200 and r.headers["x-glm-variant"] == "glm-4.7"
    assert r.json()["model"] == "claude-sonnet-4-5[1m]"


# --- a scripted host: parallel tool calls, text then a tool call ---------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
    return {
        "id": "chatcmpl-script",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "script-4.7",
        "choices": [choice],
    }


def call_start(index: int, cid: str, name: str) -> dict[str, Any]:
    fn = {"name": name, "arguments": ""}
    return {"index": index, "id": cid, "type": "function", "function": fn}


def call_args(index: int, fragment: str) -> dict[str, Any]:
    return {"index": index, "function": {"arguments": fragment}}


USAGE = {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}
PARALLEL = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"tool_calls": [call_start(0, "call_a", "Read")]}),
    chunk({"tool_calls": [call_start(1, "call_b", "Bash")]}),
    chunk({"tool_calls": [call_args(0, '{"path": ')]}),
    chunk({"tool_calls": [call_args(1, '{"command": "ls')]}),
    chunk({"tool_calls": [call_args(0, '"/etc/hosts"}')]}),
    chunk({"tool_calls": [call_args(1, ' -la"}')]}),
    chunk({}, "tool_calls"),
    {**chunk({}), "choices": [], "usage": USAGE},
]
TEXT_THEN_TOOL = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me look "}),
    chunk({"content": "at the file."}),
    chunk({"tool_calls": [call_start(0, "call_c", "Read")]}),
    chunk({"tool_calls": [call_args(0, '{"path": "README.md"}')]}),
    chunk({}, "stop"),  # hosts say "stop" here: the turn must still end tool_use
    {**chunk({}), "choices": [], "usage": USAGE},
]
NAMED_STOP = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "one two three"}),
    chunk({}, "stop", stop_reason="###"),  # vLLM names the sequence it stopped at
]
SCRIPTS = {"parallel": PARALLEL, "text-then-tool": TEXT_THEN_TOOL, "named-stop": NAMED_STOP}


class ScriptHost:
    """An OpenAI-compatible host that answers with the script its last user message names."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def chat(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.bodies.append(payload)
        last = str(payload["messages"][-1]["content"])
        script = next(v for k, v in SCRIPTS.items() if k in last)
        if not payload.get("stream"):
            return web.json_response(completion(script))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for c in script:
            await resp.write(b"data: " + orjson.dumps(c) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


def completion(script: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed answer the script's chunks add up to."""
    text, calls, finish, extra = "", {}, None, {}
    for c in script:
        for choice in c["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for tc in delta.get("tool_calls", []):
                call = calls.setdefault(tc["index"], {"type": "function", "function": {}})
                call.setdefault("id", tc.get("id"))
                fn = call["function"]
                fn.setdefault("name", tc.get("function", {}).get("name"))
                fn["arguments"] = fn.get("arguments", "") + tc["function"].get("arguments", "")
            finish = choice.get("finish_reason") or finish
            extra.update({k: v for k, v in choice.items() if k == "stop_reason"})
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {
        "id": "chatcmpl-script",
        "object": "chat.completion",
        "created": 0,
        "model": "script-4.7",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **extra}],
        "usage": USAGE,
    }


@pytest_asyncio.fixture(scope="module")
async def script_host() -> AsyncIterator[tuple[ScriptHost, str]]:
    host = ScriptHost()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", host.chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield host, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


@pytest.fixture(scope="module")
def script_gw(
    script_host: tuple[ScriptHost, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("script")
    cfg = config_copy(tmp, gateway_yaml())
    providers = {
        "providers": {
            "script": {
                "name": "Scripted host",
                "base_url": script_host[1],
                "api_key_env": None,
                "deployments": [{"variant": "glm-4.7", "model": "script-4.7"}],
            }
        }
    }
    (cfg / "providers.yaml").write_text(yaml.safe_dump(providers))
    proc = start_gateway(None, cfg, env=GATEWAY_ENV)
    yield proc
    proc.stop()


TOOLS = [READ, BASH]


async def test_parallel_tool_calls_each_reach_their_own_block(script_gw: Proc) -> None:
    _, events, snap = await stream(script_gw, body("parallel", tools=TOOLS), {})
    assert outline(events) == [
        *HEAD,
        "start:tool_use", "input_json_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta:tool_use", "message_stop",
    ]  # fmt: skip
    read, bash = snap.content
    assert (read.name, read.input) == ("Read", {"path": "/etc/hosts"})
    assert (bash.name, bash.input) == ("Bash", {"command": "ls -la"})
    assert (read.id, bash.id) == ("toolu_call_a", "toolu_call_b")
    starts = [d["index"] for n, d in events if n == "content_block_start"]
    assert starts == [0, 1]
    usage = next(d["usage"] for n, d in events if n == "message_delta")
    assert (usage["input_tokens"], usage["output_tokens"]) == (50, 20)

    r = await post(script_gw, body("parallel", tools=TOOLS))  # and not streamed
    msg = r.json()
    assert msg["stop_reason"] == "tool_use"
    assert [(b["name"], b["input"]) for b in msg["content"]] == [
        ("Read", {"path": "/etc/hosts"}),
        ("Bash", {"command": "ls -la"}),
    ]


async def test_parallel_calls_replay_with_their_ids(
    script_gw: Proc, script_host: tuple[ScriptHost, str]
) -> None:
    host, _ = script_host
    async with sdk(script_gw) as c:
        first = await c.messages.create(
            model=SONNET,
            max_tokens=256,
            messages=[{"role": "user", "content": "parallel"}],
            tools=TOOLS,  # type: ignore[arg-type]
        )
        uses = [b for b in first.content if b.type == "tool_use"]
        results = [
            {"type": "tool_result", "tool_use_id": u.id, "content": f"out {u.name}"} for u in uses
        ]
        await c.messages.create(
            model=SONNET,
            max_tokens=256,
            messages=[
                {"role": "user", "content": "parallel"},
                {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": [*results, {"type": "text", "text": "named-stop"}]},
            ],
            tools=TOOLS,  # type: ignore[arg-type]
        )
    sent = host.bodies[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    assert [tc["id"] for tc in sent[1]["tool_calls"]] == ["call_a", "call_b"]
    assert [(m["tool_call_id"], m["content"]) for m in sent[2:4]] == [
        ("call_a", "out Read"),
        ("call_b", "out Bash"),
    ]


async def test_text_then_tool_call_ends_tool_use(script_gw: Proc) -> None:
    _, events, snap = await stream(script_gw, body("text-then-tool", tools=TOOLS), {})
    assert outline(events) == [
        *HEAD,
        "start:text", "text_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta:tool_use", "message_stop",
    ]  # fmt: skip
    assert snap.content[0].text == "Let me look at the file."
    assert snap.content[1].input == {"path": "README.md"}
    r = await post(script_gw, body("text-then-tool", tools=TOOLS))
    assert r.json()["stop_reason"] == "tool_use"
    assert [b["type"] for b in r.json()["content"]] == ["text", "tool_use"]


async def test_stop_sequence_the_host_names(script_gw: Proc) -> None:
    payload = body("named-stop", stop_sequences=["###", "END"])
    _, events, snap = await stream(script_gw, payload, {})
    assert outline(events) == [
        *HEAD, "start:text", "text_delta", "stop", "message_delta:stop_sequence", "message_stop"
    ]  # fmt: skip
    assert snap.stop_sequence == "###"
    r = await post(script_gw, payload, VERSION)
    assert (r.json()["stop_reason"], r.json()["stop_sequence"]) == ("stop_sequence", "###")


async def test_a_native_network_error_finish_is_not_an_answer(gw: Proc) -> None:
    """GLM's failed-generation finish, passed on by its Messages endpoint, falls over as on the
    chat path (it was accepted as an answer with an invalid ``stop_reason``)."""
    tag = nonce()
    rule = {"match": {"provider": "zai"}, "finish_reason": "network_error"}
    headers = {"X-GLM-Providers": "zai,together"}
    r = await post(gw, body(said("hi", tag, rule), model="glm-4.7"), headers)
    assert r.status_code == 200
    assert r.headers["x-glm-provider"] == "together"  # fell over, as on the chat path
    assert r.json()["stop_reason"] == "end_turn"
    assert "zai/glm-4.7 transient" in r.headers["x-glm-fallback-reason"]


@pytest.mark.parametrize("host", ["openrouter", "zai"])
async def test_deadline_after_the_first_byte_is_a_timeout_error_event(gw: Proc, host: str) -> None:
    """It was ``api_error``: the edge's deadline error keeps status 500 and says its type."""
    tag = nonce()
    rid = "req-late-" + tag
    rule = {"match": {"provider": host}, "chunk_delay_ms": 700}
    headers = {"X-GLM-Providers": host, "X-GLM-Timeout": "2", "X-Request-Id": rid}
    long = said("a long answer " + "please " * 40, tag, rule)
    _, events, snap = await stream(gw, body(long, model="glm-4.7"), headers)
    assert snap is None
    names = outline(events)
    assert "start:text" in names and "message_stop" not in names  # committed, then cut
    assert names[-1] == "error:timeout_error", names[-1]
    rec = await wait_for_log(gw, rid)
    assert rec["status"] == 504
