"""Nothing a client sends may choose an upstream URL, key or header (issue 13, point 1).

A real gateway process, the real ``openai`` SDK, and a real loopback HTTP server standing in
for an OpenAI-compatible host (``Catcher``) that records exactly what reached it: the path, the
headers (with their values, unlike the simulator's log) and the body. A second catcher plays
the attacker's URL: it must never be called.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from tests.support.e2e import MASTER_KEY, module_gateway, nonce, text_msg
from tests.support.procs import Proc, free_port

pytestmark = pytest.mark.filterwarnings("ignore:.*ReadOnly.*qualifier:UserWarning")

OPERATOR_KEY = "sk-operator-SECRET-0123456789abcdef"
VLLM_MODEL = "THUDM/glm-4-9b-chat"
ATTACK_FIELDS = {
    "api_base": None,  # filled with the attacker's URL
    "base_url": None,
    "api_key": "sk-attacker",
    "extra_headers": {"X-Injected": "1"},
    "headers": {"X-Injected": "1"},
    "custom_llm_provider": "openai",
    "mock_response": "owned",
    "models": ["openai/gpt-5"],
    "provider": {"order": ["Expensive"]},
}


@dataclass
class Catcher:
    """A loopback host that answers chat completions and remembers every request."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.seen.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if body.get("stream") is True:
            return await self._stream(request)
        answer = {
            "id": "chatcmpl-catcher",
            "object": "chat.completion",
            "created": 1,
            "model": VLLM_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "caught"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        return web.json_response(answer)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {
            "id": "chatcmpl-catcher",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": VLLM_MODEL,
            "choices": [{"index": 0, "delta": {"content": "caught"}, "finish_reason": "stop"}],
        }
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp


@pytest_asyncio.fixture(scope="module")
async def host() -> AsyncIterator[Catcher]:
    c = Catcher()
    await c.start()
    yield c
    await c.stop()


@pytest_asyncio.fixture(scope="module")
async def attacker() -> AsyncIterator[Catcher]:
    c = Catcher()
    await c.start()
    yield c
    await c.stop()


def providers_yaml(host: Catcher) -> str:
    dep = {"variant": "glm-4-9b", "model": VLLM_MODEL}
    return yaml.safe_dump(
        {
            "providers": {
                # OpenAI-compatible, native adapter: the URL and key are the config's.
                "native": {
                    "name": "native adapter to the catcher",
                    "base_url": host.url,
                    "api_key_env": "NATIVE_KEY",
                    "headers": {"X-Operator": "yes"},
                    "deployments": [dep],
                },
                # LiteLLM with no base URL in config (as for Bedrock): LiteLLM takes its
                # destination from the process environment (OPENAI_API_BASE), never the body.
                "lite": {
                    "name": "LiteLLM without a configured base URL",
                    "adapter": "litellm",
                    "api_key_env": "LITE_KEY",
                    "deployments": [{**dep, "litellm_model": f"openai/{VLLM_MODEL}"}],
                },
            }
        }
    )


@pytest.fixture(scope="module")
def gateway(host: Catcher, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp: Path = tmp_path_factory.mktemp("isolation")
    env = {
        "NATIVE_KEY": OPERATOR_KEY,
        "LITE_KEY": OPERATOR_KEY,
        "OPENAI_API_BASE": host.url,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    with module_gateway(
        None, tmp, providers_yaml=providers_yaml(host), env=env, breaker={"failure_threshold": 1000}
    ) as proc:
        yield proc


@pytest_asyncio.fixture
async def client(gateway: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=120
    ) as c:
        yield c


def attack(attacker: Catcher) -> dict[str, Any]:
    return {**ATTACK_FIELDS, "api_base": attacker.url, "base_url": attacker.url}


def sent_for(host: Catcher, tag: str) -> dict[str, Any]:
    (hit,) = [s for s in host.seen if tag in orjson.dumps(s["body"]).decode()]
    return hit


@pytest.mark.parametrize("provider", ["native", "lite"])
@pytest.mark.parametrize("stream", [False, True])
async def test_connection_fields_in_the_body_choose_nothing(
    client: openai.AsyncOpenAI, host: Catcher, attacker: Catcher, provider: str, stream: bool
) -> None:
    tag = nonce()
    raw = await client.chat.completions.with_raw_response.create(
        model="glm-4-9b",
        messages=text_msg(f"hi {tag}"),
        stream=stream,
        extra_body=attack(attacker),
        extra_headers={"X-GLM-Providers": provider},
    )
    assert raw.headers["x-glm-provider"] == provider
    if stream:
        async for _ in raw.parse():
            pass
    assert attacker.seen == []
    sent = sent_for(host, tag)
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == f"Bearer {OPERATOR_KEY}"
    assert "X-Injected" not in sent["headers"]
    assert not set(ATTACK_FIELDS) & set(sent["body"]), sent["body"]
    assert "unknown_fields=" in raw.headers["x-glm-adapted"]


async def test_client_headers_are_never_forwarded(
    client: openai.AsyncOpenAI, host: Catcher
) -> None:
    tag = nonce()
    await client.chat.completions.create(
        model="glm-4-9b",
        messages=text_msg(f"hi {tag}"),
        extra_headers={
            "X-GLM-Providers": "native",
            "Cookie": "session=abc",
            "X-Forwarded-For": "10.0.0.1",
            "X-Api-Key": "sk-from-client",
            "OpenAI-Organization": "org-client",
        },
    )
    headers = {k.lower(): v for k, v in sent_for(host, tag)["headers"].items()}
    assert headers["authorization"] == f"Bearer {OPERATOR_KEY}"  # not the client's master key
    assert MASTER_KEY not in orjson.dumps(headers).decode()
    assert headers["x-operator"] == "yes"  # the provider's configured header
    for name in ("cookie", "x-forwarded-for", "x-api-key", "openai-organization"):
        assert name not in headers
    assert not any(k.startswith("x-glm") for k in headers)


async def test_known_fields_still_reach_the_host(client: openai.AsyncOpenAI, host: Catcher) -> None:
    tag = nonce()
    raw = await client.chat.completions.with_raw_response.create(
        model="glm-4-9b",
        messages=text_msg(f"hi {tag}"),
        temperature=0.3,
        max_tokens=50,
        seed=7,
        extra_body={"top_k": 5, "route": {"fallback": "none"}},
        extra_headers={"X-GLM-Providers": "native"},
    )
    body = sent_for(host, tag)["body"]
    assert (body["temperature"], body["max_tokens"], body["seed"], body["top_k"]) == (
        0.3,
        50,
        7,
        5,
    )
    assert "route" not in body
    assert "unknown_fields" not in (raw.headers.get("x-glm-adapted") or "")


async def test_model_id_picks_no_upstream(client: openai.AsyncOpenAI, attacker: Catcher) -> None:
    for model in (attacker.url, f"openai/{VLLM_MODEL}", "lite/../native", "glm-4-9b@evil"):
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model=model, messages=text_msg("hi"))
    assert attacker.seen == []


async def test_litellm_never_fetches_a_client_image_url(host: Catcher, attacker: Catcher) -> None:
    """LiteLLM downloads image URLs itself for inline-only hosts: refused before it can."""
    from gateway.providers.base import UpstreamConnectionError
    from gateway.providers.litellm_adapter import LiteLLMProvider
    from tests.support.catalogue import make_target, make_variant

    v = make_variant("glm-4-9b", name="GLM-4 9B", released="2024-06", context=131072, quality=30)
    target = make_target(
        "lite", v, price=None, model=VLLM_MODEL, adapter="litellm", base_url=host.url,
        api_key=OPERATOR_KEY, capabilities=frozenset(), litellm_model=f"openai/{VLLM_MODEL}",
    )  # fmt: skip
    image = {"type": "image_url", "image_url": {"url": attacker.url + "/cat.png"}}
    body = {"model": VLLM_MODEL, "messages": [{"role": "user", "content": [image]}]}
    with pytest.raises(UpstreamConnectionError, match="inline"):
        await LiteLLMProvider().send(
            target, body, stream=False, connect_timeout=1.0, read_timeout=5.0
        )
    assert attacker.seen == []
