"""Provider fidelity: each host's quirks adapted (and reported), answers normalised, errors from
real shapes classified, with the simulator speaking each host's dialect.

The simulator refuses what each real host refuses (Z.ai's ranges, fields it does not know, a
reused ``request_id``; ``web_search`` anywhere but Zhipu; SiliconFlow's ``enable_thinking`` on a
model that does not think), so a 200 here means the gateway adapted the request.
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

from tests.support.e2e import (
    AUTH,
    FUNCTION_TOOL,
    chat_body,
    directive,
    image_msg,
    log_for,
    module_gateway,
    nonce,
    parse_sse,
    sdk_client,
    sim_requests,
    text_msg,
)
from tests.support.procs import CONFIG, Proc

CHAT = "/v1/chat/completions"
ONLY = {"x-glm-fallback": "none"}


@pytest_asyncio.fixture
async def http(gateway: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def faulty(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A gateway of this module's own for injected failures: the session gateway's breakers
    (shared with every other e2e test) stay closed. Only explicit cooldowns open circuits here."""
    tmp: Path = tmp_path_factory.mktemp("faulty")
    breaker = {"failure_threshold": 1000, "error_min_requests": 1_000_000}
    with module_gateway(simulator, tmp, breaker=breaker) as proc:
        yield proc


@pytest_asyncio.fixture
async def own(faulty: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=faulty.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest_asyncio.fixture
async def own_client(faulty: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_client(faulty) as c:
        yield c


def at(provider: str) -> dict[str, str]:
    """Headers pinning the request to one provider, without fallback."""
    return {**ONLY, "x-glm-providers": provider}


def says(text: str) -> Any:
    """One user message, typed loosely for the SDK's TypedDict parameters."""
    return text_msg(text)


def adapted(r: httpx.Response) -> list[str]:
    value = r.headers.get("x-glm-adapted", "")
    return value.split(",") if value else []


async def logged(gw: Proc, request_id: str, within_s: float = 20.0) -> dict[str, Any]:
    """The request's access-log line, written just after the last byte went out."""
    end = time.monotonic() + within_s
    while (record := log_for(gw, request_id)) is None:
        assert time.monotonic() < end, f"no access-log line for {request_id}"
        await asyncio.sleep(0.05)
    return record


def upstream_body(sim: Proc, tag: str, provider: str) -> dict[str, Any]:
    sent = [q["body"] for q in sim_requests(sim, tag) if q["provider"] == provider]
    assert sent, f"{provider} got no request tagged {tag}"
    body: dict[str, Any] = sent[-1]
    return body


# --- request adaptation ------------------------------------------------------------------------


async def test_zhipu_quirks_adapted_reported_and_logged(
    http: httpx.AsyncClient, simulator: Proc, gateway: Proc
) -> None:
    tag = nonce()
    body = chat_body(
        text_msg(f"hello {tag}"),
        "glm-4.7",
        temperature=1.6,
        top_p=0.0,
        stop=["END", "STOP", "FIN"],
        max_completion_tokens=300,
        user="u1",
        seed=42,
        n=1,
        logprobs=False,
        frequency_penalty=0.2,
        parallel_tool_calls=True,
    )
    rid = "fidelity-" + tag
    r = await http.post(CHAT, json=body, headers={**at("zai"), "x-request-id": rid})
    assert r.status_code == 200, r.text
    assert adapted(r) == [
        "temperature=clamped",
        "top_p=clamped",
        "stop=truncated",
        "max_completion_tokens=max_tokens",
        "seed=dropped",
        "frequency_penalty=dropped",
        "parallel_tool_calls=dropped",
        "user=dropped",
    ]
    sent = upstream_body(simulator, tag, "zai")
    assert (sent["temperature"], sent["top_p"], sent["stop"]) == (1.0, 0.01, ["END"])
    assert sent["max_tokens"] == 300 and "max_completion_tokens" not in sent
    assert not {"seed", "n", "logprobs", "frequency_penalty", "user", "user_id"} & set(sent)
    assert len(sent["request_id"]) == 32
    record = await logged(gateway, rid)
    assert record["adaptations"] == adapted(r)


async def test_unadapted_the_host_would_have_refused(simulator: Proc) -> None:
    """The simulator's Z.ai really refuses these (so the 200s above are the gateway's doing)."""
    url = simulator.url + "/zai/v1/chat/completions"
    async with httpx.AsyncClient(headers={"Authorization": "Bearer k"}) as c:
        for extra in ({"temperature": 1.6}, {"seed": 1}, {"max_completion_tokens": 5}):
            r = await c.post(url, json={"model": "glm-4.7", "messages": text_msg("x"), **extra})
            assert r.status_code == 400 and r.json()["error"]["code"] == "1214", extra


async def test_vision_detail_and_function_strict_dropped_on_bigmodel(
    http: httpx.AsyncClient, simulator: Proc
) -> None:
    tag = nonce()
    messages = image_msg(f"what is it {tag}")
    messages[0]["content"][1]["image_url"]["detail"] = "high"
    tool = {"type": "function", "function": {"name": "get_weather", "strict": True}}
    body = chat_body(messages, "glm-4.6v", tools=[tool], user="customer-0042")
    r = await http.post(CHAT, json=body, headers=at("bigmodel"))
    assert r.status_code == 200, r.text
    assert adapted(r) == [
        "tools.function.strict=dropped",
        "image_url.detail=dropped",
        "user=user_id",
    ]
    sent = upstream_body(simulator, tag, "bigmodel")
    assert "detail" not in sent["messages"][0]["content"][1]["image_url"]
    assert "strict" not in sent["tools"][0]["function"] and sent["user_id"] == "customer-0042"


async def test_every_retry_carries_a_fresh_request_id(
    own: httpx.AsyncClient, simulator: Proc
) -> None:
    tag = nonce()
    fault = directive({"status": 500, "code": "500", "times": 1, "match": {"provider": "zai"}}, tag)
    r = await own.post(CHAT, json=chat_body(text_msg(fault), "glm-4.7"), headers=at("zai"))
    assert r.status_code == 200, r.text
    assert r.headers["x-glm-attempts"] == "2"
    ids = [q["body"]["request_id"] for q in sim_requests(simulator, tag)]
    assert len(ids) == 2 and ids[0] != ids[1]


TOOL_BODY = {"tools": [FUNCTION_TOOL], "tool_choice": "required"}


async def test_forced_tool_choice_prefers_a_host_that_can_force_it(
    http: httpx.AsyncClient,
) -> None:
    body = chat_body(text_msg("weather in Oslo?"), "glm-4.7", **TOOL_BODY)
    route = (await http.post("/v1/route", json=body)).json()
    assert route["needs"]["tool_choice_forcing"] is True
    providers = [c["provider"] for c in route["candidates"]]
    zhipu_at = min(i for i, p in enumerate(providers) if p in ("zai", "bigmodel"))
    assert all(p not in ("zai", "bigmodel") for p in providers[:zhipu_at]) and zhipu_at > 0
    r = await http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-glm-provider"] not in ("zai", "bigmodel")
    assert "x-glm-adapted" not in r.headers
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"


async def test_forced_tool_choice_degrades_to_auto_where_only_zhipu_may_serve(
    http: httpx.AsyncClient,
) -> None:
    body = chat_body(text_msg("weather in Oslo?"), "glm-4.7", **TOOL_BODY)
    r = await http.post(CHAT, json=body, headers=at("zai"))
    assert r.status_code == 200, r.text
    assert adapted(r) == ["tool_choice=auto"]


async def test_web_search_pins_the_request_to_hosts_that_run_it(
    http: httpx.AsyncClient, simulator: Proc
) -> None:
    tag = nonce()
    tools = [{"type": "web_search", "web_search": {"enable": True, "search_query": "glm"}}]
    body = chat_body(text_msg(f"news {tag}"), "glm-4.7", tools=tools)
    route = (await http.post("/v1/route", json=body)).json()
    assert {c["provider"] for c in route["candidates"]} <= {"zai", "bigmodel"}
    refused = {r["provider"]: r["reasons"] for r in route["rejected"] if r["variant"] == "glm-4.7"}
    assert any("web_search" in why for why in refused["openrouter"])
    r = await http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    assert [q["provider"] for q in sim_requests(simulator, tag)] == [r.headers["x-glm-provider"]]
    assert r.headers["x-glm-provider"] in ("zai", "bigmodel")


# --- thinking ----------------------------------------------------------------------------------

THINKING_HOSTS = [
    pytest.param("zai", "glm-4.7", "thinking", {"type": "disabled"}, id="zhipu"),
    pytest.param("openrouter", "glm-4.6", "reasoning", {"enabled": False}, id="openrouter"),
    pytest.param("siliconflow", "glm-4.6", "enable_thinking", False, id="siliconflow"),
    pytest.param(
        "vllm", "glm-4.5-air", "chat_template_kwargs", {"enable_thinking": False}, id="vllm"
    ),
    pytest.param("deepinfra", "glm-4.7", "reasoning_effort", "none", id="openai"),
]


@pytest.mark.parametrize(("provider", "variant", "field", "value"), THINKING_HOSTS)
@pytest.mark.parametrize("switch", ["thinking", "reasoning_effort"])
async def test_one_thinking_switch_reaches_every_host_in_its_form(
    client: openai.AsyncOpenAI,
    simulator: Proc,
    provider: str,
    variant: str,
    field: str,
    value: Any,
    switch: str,
) -> None:
    tag = nonce()
    on = await client.chat.completions.create(
        model=variant, messages=says(f"think {tag}"), extra_headers=at(provider)
    )
    assert getattr(on.choices[0].message, "reasoning_content", None)
    off: dict[str, Any] = (
        {"thinking": {"type": "disabled"}} if switch == "thinking" else {"reasoning_effort": "none"}
    )
    raw = await client.chat.completions.with_raw_response.create(
        model=variant,
        messages=says(f"no thinking {tag}"),
        extra_headers=at(provider),
        extra_body=off,
    )
    assert getattr(raw.parse().choices[0].message, "reasoning_content", None) is None
    sent = [q["body"] for q in sim_requests(simulator, tag) if "no thinking" in str(q["body"])]
    assert sent[-1][field] == value
    if field != switch:
        assert raw.headers["x-glm-adapted"] == f"{switch}={field}"


async def test_thinking_never_reaches_a_pre_45_variant(http: httpx.AsyncClient) -> None:
    body = chat_body(text_msg("hi"), "glm-4-32b", thinking={"type": "enabled"})
    r = await http.post(CHAT, json=body, headers=at("zai"))
    assert r.status_code == 200, r.text  # the simulator's Z.ai refuses `thinking` here
    assert adapted(r) == ["thinking=dropped"]


# --- response normalisation --------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "variant"), [("zai", "glm-4.7"), ("openrouter", "glm-4.6")])
async def test_reasoning_comes_back_as_reasoning_content(
    http: httpx.AsyncClient, provider: str, variant: str
) -> None:
    body = chat_body(text_msg("why?"), variant)
    answer = (await http.post(CHAT, json=body, headers=at(provider))).json()
    msg = answer["choices"][0]["message"]
    assert answer["object"] == "chat.completion" and answer["model"] == variant
    assert msg["reasoning_content"] and not {"reasoning", "reasoning_details"} & set(msg)
    chunks = await stream(http, body, at(provider))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == msg["reasoning_content"]
    assert not any({"reasoning", "reasoning_details"} & set(d) for d in deltas)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


async def stream(
    http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str], done: bool = True
) -> list[dict[str, Any]]:
    async with http.stream("POST", CHAT, json={**body, "stream": True}, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        events = parse_sse((await r.aread()).decode())
    assert (events[-1] == "[DONE]") is done, events[-3:]
    return [e for e in events if e != "[DONE]"]


async def test_glm_45v_think_and_box_tags_unwrapped(http: httpx.AsyncClient) -> None:
    body = chat_body(image_msg("what is in the picture?"), "glm-4.5v")
    answer = (await http.post(CHAT, json=body, headers=at("zai"))).json()
    msg = answer["choices"][0]["message"]
    assert msg["content"].startswith("Hello from glm-4.5v") and msg["reasoning_content"]
    assert not any(t in msg["content"] + msg["reasoning_content"] for t in ("<think>", "<|"))
    chunks = await stream(http, body, at("zai"))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == msg["content"]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == msg["reasoning_content"]


async def test_sensitive_becomes_content_filter(http: httpx.AsyncClient) -> None:
    tag = nonce()
    text = "tell me " + directive({"finish_reason": "sensitive"}, tag)
    body = chat_body(text_msg(text), "glm-4.7")
    answer = (await http.post(CHAT, json=body, headers=at("zai"))).json()
    assert answer["choices"][0]["finish_reason"] == "content_filter"
    chunks = await stream(http, body, at("zai"))
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == (
        "content_filter"
    )


async def test_tool_call_arguments_always_a_json_string(client: openai.AsyncOpenAI) -> None:
    tag = nonce()
    text = "weather? " + directive({"tool_args_object": True}, tag)
    tools: Any = [FUNCTION_TOOL]
    resp = await client.chat.completions.create(
        model="glm-4.7", messages=says(text), tools=tools, extra_headers=at("zai")
    )
    calls: Any = resp.choices[0].message.tool_calls
    assert isinstance(orjson.loads(calls[0].function.arguments)["city"], str)
    chunks = await client.chat.completions.create(
        model="glm-4.7", messages=says(text), tools=tools, extra_headers=at("zai"), stream=True
    )
    deltas: list[Any] = [c.choices[0].delta.tool_calls async for c in chunks if c.choices]
    args = "".join(t.function.arguments or "" for d in deltas if d for t in d if t.function)
    assert isinstance(orjson.loads(args)["city"], str)


@pytest.mark.parametrize(
    ("provider", "variant"),
    [
        ("zai", "glm-4.7"),
        ("openrouter", "glm-4.6"),
        ("siliconflow", "glm-4.6"),
        ("vllm", "glm-4-9b"),
        ("deepinfra", "glm-4.7"),
    ],
)
async def test_usage_on_the_final_chunk_exactly_when_asked(
    http: httpx.AsyncClient, simulator: Proc, gateway: Proc, provider: str, variant: str
) -> None:
    tag = nonce()
    body = chat_body(text_msg(f"count {tag}"), variant)
    asked = await stream(http, {**body, "stream_options": {"include_usage": True}}, at(provider))
    assert asked[-1]["choices"] == [] and asked[-1]["usage"]["total_tokens"] > 0
    assert all(c.get("usage") is None for c in asked[:-1])
    rid = "usage-" + tag
    quiet = await stream(http, body, {**at(provider), "x-request-id": rid})
    assert all(c["choices"] and c.get("usage") is None for c in quiet)
    record = await logged(gateway, rid)
    assert record["usage"]["total_tokens"] > 0  # metered anyway
    sent = upstream_body(simulator, tag, provider)
    if provider == "zai":
        assert "stream_options" not in sent  # Z.ai always sends usage
    else:
        assert sent["stream_options"] == {"include_usage": True}


# --- failures inside 200 streams ---------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param({"finish_reason": "network_error", "cut_after_chunks": 0}, id="network_error"),
        pytest.param({"stream_error": {"code": 502, "message": "provider died"}}, id="error_event"),
    ],
)
@pytest.mark.parametrize("provider", ["zai", "openrouter", "deepinfra"])
async def test_stream_failure_before_any_content_falls_over(
    own: httpx.AsyncClient, provider: str, rule: dict[str, Any]
) -> None:
    tag = nonce()
    text = "go " + directive({**rule, "match": {"provider": provider}}, tag)
    headers = {"x-glm-providers": f"{provider},novita", "x-glm-fallback": "variants"}
    # Thinking off: streamed reasoning is answer bytes too, and would commit the stream.
    body = chat_body(text_msg(text), "glm-4.7", stream=True, thinking={"type": "disabled"})
    async with own.stream("POST", CHAT, json=body, headers=headers) as r:
        events = parse_sse((await r.aread()).decode())
    assert r.status_code == 200 and events[-1] == "[DONE]"
    # transient: one retry on the same deployment, then the next candidate
    assert r.headers["x-glm-provider"] == "novita" and r.headers["x-glm-attempts"] == "3"
    reason = r.headers["x-glm-fallback-reason"]
    assert reason.count(f"{provider}/glm-4.7 transient 200") == 2


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param({"finish_reason": "network_error", "cut_after_chunks": 2}, id="network_error"),
        pytest.param(
            {"stream_error": {"code": 502, "message": "provider died"}, "cut_after_chunks": 2},
            id="error_event",
        ),
    ],
)
@pytest.mark.parametrize("provider", ["zai", "openrouter", "deepinfra"])
async def test_stream_failure_after_content_ends_with_an_error_event(
    own_client: openai.AsyncOpenAI, provider: str, rule: dict[str, Any]
) -> None:
    tag = nonce()
    text = "go on and on and on " + directive({**rule, "match": {"provider": provider}}, tag)
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        async for c in await own_client.chat.completions.create(
            model="glm-4.7", messages=says(text), stream=True, extra_headers=at(provider)
        ):
            if c.choices and c.choices[0].delta.content:
                got.append(c.choices[0].delta.content)
    assert got and "stream_interrupted" in str(info.value.body) + str(info.value)


# --- errors classified from the hosts' shapes --------------------------------------------------


async def test_siliconflow_model_gone_falls_over(own: httpx.AsyncClient) -> None:
    tag = nonce()
    rule = {
        "status": 400,
        "code": "20012",
        "message": "Model does not exist. Please check it carefully.",
        "match": {"provider": "siliconflow"},
    }
    body = chat_body(text_msg("hi " + directive(rule, tag)), "glm-4.6")
    headers = {"x-glm-providers": "siliconflow,deepinfra", "x-glm-fallback": "providers"}
    r = await own.post(CHAT, json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-glm-provider"] == "deepinfra"
    assert "siliconflow/glm-4.6 model_gone 400 code=20012" in r.headers["x-glm-fallback-reason"]


# --- auth / balance: the deployment's key marked bad -------------------------------------------


def bad_key_providers() -> str:
    data = yaml.safe_load((CONFIG / "providers.yaml").read_text())
    data["providers"]["zai"]["headers"] = {"Authorization": "Bearer bad-key"}
    data["providers"]["siliconflow"]["headers"] = {"Authorization": "Bearer broke-account"}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@pytest.fixture(scope="module")
def bad_key_gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("badkey")
    with module_gateway(simulator, tmp, providers_yaml=bad_key_providers()) as proc:
        yield proc


@pytest.mark.parametrize(
    ("provider", "variant", "code"),
    [("zai", "glm-4.7", "1002"), ("siliconflow", "glm-4.6", "30011")],
)
async def test_auth_and_balance_errors_mark_the_key_bad(
    bad_key_gateway: Proc, provider: str, variant: str, code: str
) -> None:
    body = chat_body(text_msg("hi"), variant)
    headers = {"x-glm-providers": f"{provider},deepinfra", "x-glm-fallback": "providers"}
    async with httpx.AsyncClient(base_url=bad_key_gateway.url, headers=AUTH, timeout=60) as c:
        r = await c.post(CHAT, json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-glm-provider"] == "deepinfra"
        assert f"{provider}/{variant} auth" in r.headers["x-glm-fallback-reason"]
        assert f"code={code}" in r.headers["x-glm-fallback-reason"]
        ready = (await c.get("/readyz")).json()
        assert f"{provider}/{variant}" in ready["key_bad"]
        route = (await c.post("/v1/route", json=body, headers=headers)).json()
        reasons = next(
            r["reasons"]
            for r in route["rejected"]
            if (r["provider"], r["variant"]) == (provider, variant)
        )
        assert any(why.startswith("key marked bad") for why in reasons)
        assert [c["provider"] for c in route["candidates"]] == ["deepinfra"]
