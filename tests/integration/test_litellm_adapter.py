"""The LiteLLM adapter, for real, against the simulator through LiteLLM's own OpenAI-compatible
route (``openai/<id>`` with ``api_base``): directly, and end to end through a gateway whose
config has a LiteLLM provider.

LiteLLM never touches the network for its cost map (LITELLM_LOCAL_MODEL_COST_MAP is set before
it is imported, here and in the gateway process).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import pytest_asyncio
import yaml

from gateway.catalogue.target import Target
from gateway.providers.base import UpstreamConnectionError, UpstreamResponse, UpstreamTimeout
from gateway.providers.litellm_adapter import LiteLLMProvider
from gateway.routing import failures as fl
from gateway.routing.sse import SSEReader, event_json, is_done
from tests.support import openapi
from tests.support.catalogue import make_target, make_variant
from tests.support.e2e import (
    AUTH,
    GATEWAY_ENV,
    MASTER_KEY,
    assert_glm_headers,
    chat_body,
    directive,
    gateway_yaml,
    nonce,
    parse_sse,
    sim_requests,
    text_msg,
    upstream_hits,
)
from tests.support.procs import Proc, config_copy, free_port, start_gateway

# LiteLLM's own types trip a pydantic UserWarning on first use; it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning")

VLLM_MODEL = "THUDM/glm-4-9b-chat"  # what the simulator's vllm host serves for glm-4-9b


def lite_target(base_url: str, api_key: str | None = "sim-key", **kw: Any) -> Target:
    v = make_variant("glm-4-9b", name="GLM-4 9B", released="2024-06", context=131072, quality=30)
    fields: dict[str, Any] = {
        "model": VLLM_MODEL,
        "adapter": "litellm",
        "base_url": base_url,
        "api_key": api_key,
        "capabilities": frozenset(),
        "litellm_model": f"openai/{VLLM_MODEL}",
        **kw,
    }
    return make_target("lite", v, price=None, **fields)


@pytest.fixture(scope="module")
def provider() -> LiteLLMProvider:
    return LiteLLMProvider()


@pytest.fixture(scope="module")
def target(simulator: Proc) -> Target:
    return lite_target(f"{simulator.url}/vllm/v1")


async def send(
    provider: LiteLLMProvider,
    target: Target,
    text: str,
    *,
    stream: bool = False,
    read_timeout: float = 60.0,
    **extra: Any,
) -> UpstreamResponse:
    body = {"model": target.model, "messages": text_msg(text), **extra}
    return await provider.send(
        target, body, stream=stream, connect_timeout=5.0, read_timeout=read_timeout
    )


# --- the adapter on its own ------------------------------------------------------------------


async def test_completion_through_litellm(
    provider: LiteLLMProvider, target: Target, simulator: Proc
) -> None:
    tag = nonce()
    resp = await send(provider, target, f"hello {tag}", max_tokens=200, temperature=0.3)
    assert resp.status == 200, resp.body
    obj = orjson.loads(resp.body)
    assert obj["choices"][0]["message"]["content"].startswith("Hello from glm-4-9b via vllm")
    assert obj["usage"]["total_tokens"] > 0
    (sent,) = sim_requests(simulator, tag)
    assert sent["provider"] == "vllm" and sent["path"] == "/vllm/v1/chat/completions"
    assert sent["body"]["model"] == VLLM_MODEL  # LiteLLM stripped its "openai/" prefix
    assert sent["body"]["max_tokens"] == 200 and sent["body"]["temperature"] == 0.3
    assert sent["headers"]["Authorization"] == "<redacted>"  # a key was sent


async def test_stream_through_litellm(
    provider: LiteLLMProvider, target: Target, simulator: Proc
) -> None:
    tag = nonce()
    resp = await send(provider, target, f"stream {tag}", stream=True)
    assert resp.status == 200 and resp.chunks is not None
    reader = SSEReader(resp.chunks)
    events = []
    while (event := await reader.next_event()) is not None:
        events.append(event)
    assert is_done(events[-1])
    objs = [event_json(e) for e in events[:-1]]
    text = "".join((o["choices"][0]["delta"].get("content") or "") for o in objs if o["choices"])
    assert text.startswith("Hello from glm-4-9b via vllm")
    assert objs[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("finish_reason" in o["choices"][0] for o in objs if o["choices"])
    assert sim_requests(simulator, tag)[0]["body"]["stream"] is True


@pytest.mark.parametrize(
    ("rule", "cls", "status"),
    [
        ({"status": 429, "retry_after": 7}, fl.FailureClass.RATE_LIMIT, 429),
        ({"status": 500}, fl.FailureClass.TRANSIENT, 500),
        ({"status": 503}, fl.FailureClass.OVERLOADED, 503),
        (
            {
                "status": 400,
                "code": "context_length_exceeded",
                "message": "This model's maximum context length is 8192 tokens.",
            },
            fl.FailureClass.CONTEXT,
            400,
        ),
        ({"status": 404, "code": "model_not_found"}, fl.FailureClass.MODEL_GONE, 404),
        ({"status": 400, "message": "temperature out of range"}, fl.FailureClass.CALLER, 400),
    ],
)
async def test_error_status_maps_through_the_failure_table(
    provider: LiteLLMProvider,
    target: Target,
    rule: dict[str, Any],
    cls: fl.FailureClass,
    status: int,
) -> None:
    tag = nonce()
    resp = await send(provider, target, f"hi {tag} {directive(rule, tag)}")
    assert resp.status == status, resp.body
    err = orjson.loads(resp.body)["error"]
    assert err["message"]
    failure = fl.classify_response(resp.status, resp.headers, resp.body)
    assert failure.cls is cls, failure
    if "retry_after" in rule:
        assert failure.retry_after == rule["retry_after"]


async def test_bad_key_is_auth(provider: LiteLLMProvider, simulator: Proc) -> None:
    bad = lite_target(
        f"{simulator.url}/zai/api/paas/v4",
        api_key="bad-key",
        litellm_model="openai/glm-4.7",
        model="glm-4.7",
    )
    resp = await send(provider, bad, "hi")
    assert resp.status == 401
    assert fl.classify_response(resp.status, resp.headers, resp.body).cls is fl.FailureClass.AUTH


async def test_stream_error_status(provider: LiteLLMProvider, target: Target) -> None:
    tag = nonce()
    resp = await send(provider, target, f"hi {tag} {directive({'status': 429}, tag)}", stream=True)
    assert resp.status == 429 and resp.chunks is None
    assert (
        fl.classify_response(resp.status, resp.headers, resp.body).cls is fl.FailureClass.RATE_LIMIT
    )


async def test_no_answer_in_time_is_upstream_timeout(
    provider: LiteLLMProvider, target: Target
) -> None:
    tag = nonce()
    with pytest.raises(UpstreamTimeout):
        await send(
            provider, target, f"hi {tag} {directive({'latency_ms': 5000}, tag)}", read_timeout=0.5
        )


async def test_connection_refused_is_upstream_connection_error(provider: LiteLLMProvider) -> None:
    dead = lite_target(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(UpstreamConnectionError):
        await send(provider, dead, "hi")


# --- end to end: a gateway with a LiteLLM provider -------------------------------------------


def lite_providers(sim_url: str) -> str:
    base = f"{sim_url}/vllm/v1"
    dep = {"variant": "glm-4-9b", "model": VLLM_MODEL, "litellm_model": f"openai/{VLLM_MODEL}"}
    return yaml.safe_dump(
        {
            "providers": {
                "lite": {
                    "name": "LiteLLM to the simulator",
                    "adapter": "litellm",
                    "base_url": base,
                    "api_key_env": "LITE_SIM_KEY",
                    "deployments": [dep],
                },
                "litebad": {
                    "name": "LiteLLM with a refused key",
                    "adapter": "litellm",
                    "base_url": f"{sim_url}/deepinfra/v1",
                    "api_key_env": "LITE_BAD_KEY",
                    "deployments": [
                        {
                            "variant": "glm-4-9b",
                            "model": "zai-org/GLM-4.7",
                            "litellm_model": "openai/zai-org/GLM-4.7",
                            "priority": 2,
                        }
                    ],
                },
                "vllm": {
                    "name": "vLLM on the simulator (native adapter)",
                    "dialect": "vllm",
                    "base_url": base,
                    "api_key_env": None,
                    "deployments": [{"variant": "glm-4-9b", "model": VLLM_MODEL, "priority": 1}],
                },
            }
        }
    )


@pytest.fixture(scope="module")
def lite_gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("litellm")
    cfg = config_copy(tmp, gateway_yaml(breaker={"failure_threshold": 1000}))
    (cfg / "providers.yaml").write_text(lite_providers(simulator.url))
    env = {
        **GATEWAY_ENV,
        "LITE_SIM_KEY": "sim-key",
        "LITE_BAD_KEY": "bad-key",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    proc = start_gateway(None, cfg, env=env)  # no --simulator: base URLs as written
    yield proc
    proc.stop()


@pytest_asyncio.fixture
async def lite_client(lite_gateway: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    # generous: the gateway imports LiteLLM on its first LiteLLM request
    async with openai.AsyncOpenAI(
        base_url=lite_gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=120
    ) as c:
        yield c


async def test_gateway_answers_through_litellm(
    lite_client: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    raw = await lite_client.chat.completions.with_raw_response.create(
        model="glm-4-9b", messages=text_msg(f"hi {tag}"), extra_headers={"X-GLM-Providers": "lite"}
    )
    resp = raw.parse()
    assert_glm_headers(raw.headers)
    assert raw.headers["x-glm-provider"] == "lite" and raw.headers["x-glm-attempts"] == "1"
    assert resp.model == "glm-4-9b"
    assert resp.choices[0].message.content.startswith("Hello from glm-4-9b via vllm")
    openapi.validate("CreateChatCompletionResponse", orjson.loads(raw.content))
    assert upstream_hits(simulator, tag) == [("vllm", VLLM_MODEL)]


async def test_gateway_streams_through_litellm(lite_gateway: Proc) -> None:
    body = chat_body(text_msg("stream it"), model="glm-4-9b", stream=True)
    async with (
        httpx.AsyncClient(base_url=lite_gateway.url, headers=AUTH, timeout=120) as c,
        c.stream(
            "POST", "/v1/chat/completions", json=body, headers={"X-GLM-Providers": "lite"}
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["x-glm-provider"] == "lite"
        events = parse_sse((await r.aread()).decode())
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        openapi.validate("CreateChatCompletionStreamResponse", e)
    assert {e["model"] for e in events[:-1]} == {"glm-4-9b"}
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]
    )
    assert text.startswith("Hello from glm-4-9b")


async def test_gateway_falls_over_from_a_refused_litellm_key(
    lite_client: openai.AsyncOpenAI,
) -> None:
    raw = await lite_client.chat.completions.with_raw_response.create(
        model="glm-4-9b",
        messages=text_msg("hi"),
        extra_headers={"X-GLM-Providers": "litebad,lite"},
    )
    assert raw.headers["x-glm-provider"] == "lite"
    assert "litebad/glm-4-9b auth 401" in raw.headers["x-glm-fallback-reason"]


async def test_gateway_falls_over_from_a_failing_litellm_host(
    lite_client: openai.AsyncOpenAI, simulator: Proc
) -> None:
    # both providers reach the simulator's vllm host: the first two requests (LiteLLM's try
    # and its transient retry) fail, the native adapter's request then succeeds
    tag = nonce()
    fail = directive({"status": 500, "times": 2}, tag)
    raw = await lite_client.chat.completions.with_raw_response.create(
        model="glm-4-9b",
        messages=text_msg(f"hi {tag} {fail}"),
        extra_headers={"X-GLM-Providers": "lite,vllm"},
    )
    assert raw.headers["x-glm-provider"] == "vllm"
    assert raw.headers["x-glm-attempts"] == "3"
    assert "lite/glm-4-9b transient 500" in raw.headers["x-glm-fallback-reason"]
    assert len(upstream_hits(simulator, tag)) == 3


async def test_gateway_falls_over_to_litellm_on_rate_limit(
    lite_client: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    fail = directive({"status": 429, "times": 1}, tag)
    raw = await lite_client.chat.completions.with_raw_response.create(
        model="glm-4-9b",
        messages=text_msg(f"hi {tag} {fail}"),
        extra_headers={"X-GLM-Providers": "vllm,lite"},
    )
    assert raw.headers["x-glm-provider"] == "lite"
    assert raw.headers["x-glm-attempts"] == "2"
    assert "vllm/glm-4-9b rate_limit 429" in raw.headers["x-glm-fallback-reason"]
    assert raw.parse().choices[0].message.content
