"""Fallback across providers and across variants, with the simulator failing on demand.

This module runs its own gateway (own breakers) so the circuits its failures open never touch
the other modules. Breakers only open here on explicit cooldowns (rate limit, auth, model gone),
never on failure counts, and each test uses deployments no other test here fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio
import yaml

from tests.support.e2e import (
    FUNCTION_TOOL,
    GATEWAY_ENV,
    assert_error_shape,
    assert_glm_headers,
    directive,
    gateway_yaml,
    image_msg,
    module_gateway,
    nonce,
    sdk_client,
    text_msg,
    upstream_hits,
)
from tests.support.procs import CONFIG, Proc, config_copy, free_port, start_gateway

SLOW_PROVIDER = "siliconflow"
SLOW_PROVIDER_TIMEOUT_S = 2.0


def providers_with_timeout() -> str:
    data = yaml.safe_load((CONFIG / "providers.yaml").read_text())
    data["providers"][SLOW_PROVIDER]["timeout"] = SLOW_PROVIDER_TIMEOUT_S
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def fb_gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(
        simulator,
        tmp_path_factory.mktemp("fallback"),
        providers_yaml=providers_with_timeout(),
        breaker={"failure_threshold": 1000},
    ) as gw:
        yield gw


@pytest_asyncio.fixture
async def fb(fb_gateway: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_client(fb_gateway) as c:
        yield c


async def ok(
    c: openai.AsyncOpenAI,
    text: str,
    model: str = "auto",
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[Any, dict[str, str]]:
    raw = await c.chat.completions.with_raw_response.create(
        model=model, messages=kw.pop("messages", text_msg(text)), extra_headers=headers or {}, **kw
    )
    resp = raw.parse()
    hdrs = {k.lower(): v for k, v in raw.headers.items()}
    assert_glm_headers(hdrs)
    assert hdrs["x-glm-variant"] == resp.model
    return resp, hdrs


async def failed(
    c: openai.AsyncOpenAI,
    text: str,
    model: str = "auto",
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[openai.APIStatusError, dict[str, Any]]:
    with pytest.raises(openai.APIStatusError) as ei:
        await c.chat.completions.create(
            model=model,
            messages=kw.pop("messages", text_msg(text)),
            extra_headers=headers or {},
            **kw,
        )
    exc = ei.value
    assert_glm_headers(exc.response.headers)
    return exc, assert_error_shape(exc.response.json())


# --- across providers ------------------------------------------------------------------------


async def test_transient_error_is_retried_then_next_provider(
    fb: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    fail = directive({"match": {"provider": "zai"}, "status": 500}, tag)
    resp, h = await ok(
        fb, f"hi {tag} {fail}", model="glm-4.7", headers={"X-GLM-Providers": "zai,bigmodel"}
    )
    assert (resp.model, h["x-glm-provider"]) == ("glm-4.7", "bigmodel")
    assert h["x-glm-attempts"] == "3"  # zai, zai again (transient_retries: 1), bigmodel
    assert "zai/glm-4.7 transient 500" in h["x-glm-fallback-reason"]
    assert upstream_hits(simulator, tag) == [
        ("zai", "glm-4.7"),
        ("zai", "glm-4.7"),
        ("bigmodel", "glm-4.7"),
    ]
    assert resp.choices[0].message.content


async def test_transient_error_once_is_retried_on_the_same_provider(
    fb: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    fail = directive({"match": {"provider": "zai"}, "status": 502, "times": 1}, tag)
    resp, h = await ok(
        fb, f"hi {tag} {fail}", model="glm-4.5-air", headers={"X-GLM-Providers": "zai,novita"}
    )
    assert h["x-glm-provider"] == "zai" and resp.model == "glm-4.5-air"
    assert h["x-glm-attempts"] == "2"
    assert "x-glm-fallback-reason" in h
    assert [p for p, _ in upstream_hits(simulator, tag)] == ["zai", "zai"]


async def test_rate_limit_moves_on_without_retry(fb: openai.AsyncOpenAI, simulator: Proc) -> None:
    tag = nonce()
    fail = directive({"match": {"provider": "together"}, "status": 429, "retry_after": 1}, tag)
    _, h = await ok(
        fb, f"hi {tag} {fail}", model="glm-4.6", headers={"X-GLM-Providers": "together,deepinfra"}
    )
    assert h["x-glm-provider"] == "deepinfra"
    assert h["x-glm-attempts"] == "2"
    assert "together/glm-4.6 rate_limit 429" in h["x-glm-fallback-reason"]
    assert upstream_hits(simulator, tag) == [
        ("together", "zai-org/GLM-4.6"),
        ("deepinfra", "zai-org/GLM-4.6"),
    ]


async def test_auth_failure_moves_on(fb: openai.AsyncOpenAI, simulator: Proc) -> None:
    tag = nonce()
    fail = directive(
        {"match": {"provider": "together"}, "status": 401, "code": "invalid_api_key"}, tag
    )
    _, h = await ok(
        fb, f"hi {tag} {fail}", model="glm-4.7", headers={"X-GLM-Providers": "together,fireworks"}
    )
    assert h["x-glm-provider"] == "fireworks"
    assert "together/glm-4.7 auth 401" in h["x-glm-fallback-reason"]


async def test_model_gone_moves_on(fb: openai.AsyncOpenAI) -> None:
    tag = nonce()
    fail = directive({"match": {"provider": "novita"}, "status": 404}, tag)
    _, h = await ok(
        fb, f"hi {tag} {fail}", model="glm-4.5v", headers={"X-GLM-Providers": "novita,zai"}
    )
    assert h["x-glm-provider"] == "zai"
    assert "model_gone" in h["x-glm-fallback-reason"]


async def test_timeout_moves_on(fb: openai.AsyncOpenAI, simulator: Proc) -> None:
    tag = nonce()
    slow = directive(
        {"match": {"provider": SLOW_PROVIDER}, "latency_ms": SLOW_PROVIDER_TIMEOUT_S * 3000}, tag
    )
    _, h = await ok(
        fb,
        f"hi {tag} {slow}",
        model="glm-4.7",
        headers={"X-GLM-Providers": f"{SLOW_PROVIDER},openrouter"},
    )
    assert h["x-glm-provider"] == "openrouter"
    assert h["x-glm-attempts"] == "2"
    assert f"{SLOW_PROVIDER}/glm-4.7 timeout" in h["x-glm-fallback-reason"]


async def test_context_failure_only_tries_larger_windows(
    fb: openai.AsyncOpenAI, simulator: Proc
) -> None:
    # windows for glm-4.7: deepinfra 202,752; zai 200,000 (smaller: skipped); novita 204,800
    tag = nonce()
    fail = directive(
        {
            "match": {"provider": "deepinfra"},
            "status": 400,
            "code": "context_length_exceeded",
            "message": "This model's maximum context length is 202752 tokens.",
        },
        tag,
    )
    _, h = await ok(
        fb,
        f"hi {tag} {fail}",
        model="glm-4.7",
        headers={"X-GLM-Providers": "deepinfra,zai,novita"},
    )
    assert h["x-glm-provider"] == "novita"
    assert [p for p, _ in upstream_hits(simulator, tag)] == ["deepinfra", "novita"]


# --- across variants -------------------------------------------------------------------------


async def test_falls_over_to_another_capable_variant(
    fb: openai.AsyncOpenAI, simulator: Proc
) -> None:
    # function calling at novita: glm-4.7 (cheapest), then glm-4.6v, then glm-4.5v
    tag = nonce()
    fail = directive({"match": {"provider": "novita", "variant": "glm-4.7"}, "status": 500}, tag)
    resp, h = await ok(
        fb,
        f"weather? {tag} {fail}",
        headers={"X-GLM-Providers": "novita", "X-GLM-Prefer": "quality"},
        tools=[FUNCTION_TOOL],
    )
    assert resp.model == "glm-4.6v"
    assert h["x-glm-attempts"] == "3"
    assert "novita/glm-4.7 transient" in h["x-glm-fallback-reason"]
    assert upstream_hits(simulator, tag) == [
        ("novita", "zai-org/glm-4.7"),
        ("novita", "zai-org/glm-4.7"),
        ("novita", "zai-org/glm-4.6v"),
    ]
    assert resp.choices[0].message.tool_calls


async def test_fallback_never_reaches_an_incapable_variant(
    fb: openai.AsyncOpenAI, simulator: Proc
) -> None:
    # vision + tools + 100k: only glm-4.6v qualifies; when its hosts fail, nothing else is tried
    tag = nonce()
    fail = directive({"match": {"variant": "glm-4.6v"}, "status": 500}, tag)
    exc, err = await failed(
        fb,
        "",
        messages=image_msg(f"weather here? {tag} {fail}"),
        tools=[FUNCTION_TOOL],
        headers={"X-GLM-Min-Context": "100k", "X-GLM-Providers": "openrouter,novita"},
    )
    assert exc.status_code == 502
    assert err["type"] == "upstream_error" and err["code"] == "all_candidates_failed"
    hits = upstream_hits(simulator, tag)
    assert hits == [
        ("openrouter", "z-ai/glm-4.6v"),
        ("openrouter", "z-ai/glm-4.6v"),
        ("novita", "zai-org/glm-4.6v"),
        ("novita", "zai-org/glm-4.6v"),
    ]
    attempts = err["attempts"]
    assert [(a["provider"], a["variant"], a["status"], a["class"]) for a in attempts] == [
        ("openrouter", "glm-4.6v", 500, "transient"),
        ("openrouter", "glm-4.6v", 500, "transient"),
        ("novita", "glm-4.6v", 500, "transient"),
        ("novita", "glm-4.6v", 500, "transient"),
    ]
    assert exc.response.headers["x-glm-attempts"] == "4"
    assert "novita/glm-4.6v transient 500" in exc.response.headers["x-glm-fallback-reason"]
    assert "openrouter/glm-4.6v" in err["message"] and "novita/glm-4.6v" in err["message"]


async def test_pinned_variant_falls_back_across_its_providers_only(
    fb: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    fail = directive({"match": {"variant": "glm-4.5-air"}, "status": 500}, tag)
    exc, err = await failed(
        fb,
        f"hi {tag} {fail}",
        model="glm-4.5-air",
        # not together: test_auth_failure_moves_on marks its key bad for all its deployments
        headers={"X-GLM-Providers": "fireworks,novita"},
    )
    assert exc.status_code == 502
    assert {a["variant"] for a in err["attempts"]} == {"glm-4.5-air"}
    assert {p for p, _ in upstream_hits(simulator, tag)} == {"fireworks", "novita"}
    assert exc.response.headers["x-glm-variant"] == "glm-4.5-air"


async def test_attempt_budget_is_kept(fb: openai.AsyncOpenAI, simulator: Proc) -> None:
    # glm-4.5 has 7 deployments; every one fails transiently; max_attempts is 8
    tag = nonce()
    fail = directive({"match": {"variant": "glm-4.5"}, "status": 500}, tag)
    exc, err = await failed(fb, f"hi {tag} {fail}", model="glm-4.5")
    assert exc.status_code == 502
    assert len(err["attempts"]) == 8
    assert len(upstream_hits(simulator, tag)) == 8


# --- what the client gets when everything fails ----------------------------------------------


async def test_all_capacity_failures_are_503_with_retry_after(fb: openai.AsyncOpenAI) -> None:
    tag = nonce()
    fail = directive({"match": {"variant": "glm-4.5v"}, "status": 429, "retry_after": 3}, tag)
    exc, err = await failed(
        fb,
        f"hi {tag} {fail}",
        model="glm-4.5v",
        headers={"X-GLM-Providers": "openrouter,fireworks"},
    )
    assert exc.status_code == 503
    assert err["code"] == "all_candidates_failed"
    assert int(exc.response.headers["retry-after"]) >= 1
    assert [a["class"] for a in err["attempts"]] == ["rate_limit", "rate_limit"]


async def test_fallback_none_tries_one_deployment(fb: openai.AsyncOpenAI, simulator: Proc) -> None:
    tag = nonce()
    fail = directive({"match": {"provider": "openrouter"}, "status": 503}, tag)
    exc, err = await failed(
        fb,
        f"hi {tag} {fail}",
        model="glm-4.6",
        headers={"X-GLM-Providers": "openrouter,zai", "X-GLM-Fallback": "none"},
    )
    assert exc.status_code == 503
    assert len(err["attempts"]) == 1
    assert [p for p, _ in upstream_hits(simulator, tag)] == ["openrouter"]


async def test_upstream_caller_error_is_not_fallen_over(
    fb: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    fail = directive(
        {
            "match": {"provider": "fireworks"},
            "status": 400,
            "code": "invalid_value",
            "message": "temperature is out of range",
        },
        tag,
    )
    exc, err = await failed(
        fb, f"hi {tag} {fail}", model="glm-4.6", headers={"X-GLM-Providers": "fireworks,novita"}
    )
    assert exc.status_code == 400
    assert err["type"] == "invalid_request_error"
    assert "temperature is out of range" in err["message"]
    assert "fireworks" in err["message"]
    assert [p for p, _ in upstream_hits(simulator, tag)] == ["fireworks"]
    assert exc.response.headers["x-glm-attempts"] == "1"


async def test_content_filter_is_not_fallen_over(fb: openai.AsyncOpenAI, simulator: Proc) -> None:
    tag = nonce()
    fail = directive(
        {"match": {"provider": "bigmodel"}, "status": 400, "code": "1301", "message": "不安全"},
        tag,
    )
    exc, err = await failed(
        fb, f"hi {tag} {fail}", model="glm-4-air", headers={"X-GLM-Fallback": "variants"}
    )
    assert exc.status_code == 400
    assert err["code"] == "content_policy_violation"
    assert [p for p, _ in upstream_hits(simulator, tag)] == ["bigmodel"]


# --- a provider that is down (no simulator rewrite: real base URLs) --------------------------


def dead_port_providers(sim_url: str, dead_port: int) -> str:
    return yaml.safe_dump(
        {
            "providers": {
                "dead": {
                    "name": "Nobody listening",
                    "base_url": f"http://127.0.0.1:{dead_port}/v1",
                    "api_key_env": None,
                    "deployments": [{"variant": "glm-4-9b", "model": "THUDM/glm-4-9b-chat"}],
                },
                "vllm": {
                    "name": "vLLM on the simulator",
                    "dialect": "vllm",
                    "base_url": f"{sim_url}/vllm/v1",
                    "api_key_env": None,
                    "deployments": [
                        {"variant": "glm-4-9b", "model": "THUDM/glm-4-9b-chat", "priority": 1}
                    ],
                },
            }
        }
    )


@pytest.fixture(scope="module")
def dead_gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("dead")
    cfg = config_copy(tmp, gateway_yaml(breaker={"failure_threshold": 1000}))
    (cfg / "providers.yaml").write_text(dead_port_providers(simulator.url, free_port()))
    proc = start_gateway(None, cfg, env=GATEWAY_ENV)
    yield proc
    proc.stop()


async def test_connection_refused_falls_over(dead_gateway: Proc, simulator: Proc) -> None:
    tag = nonce()
    async with sdk_client(dead_gateway) as c:
        resp, h = await ok(
            c, f"hi {tag}", model="glm-4-9b", headers={"X-GLM-Providers": "dead,vllm"}
        )
        assert (resp.model, h["x-glm-provider"]) == ("glm-4-9b", "vllm")
        assert h["x-glm-attempts"] == "3"
        assert "dead/glm-4-9b transient no-answer" in h["x-glm-fallback-reason"]
        assert upstream_hits(simulator, tag) == [("vllm", "THUDM/glm-4-9b-chat")]

        exc, err = await failed(
            c, f"hi {tag}", model="glm-4-9b", headers={"X-GLM-Providers": "dead"}
        )
        assert exc.status_code == 502
        assert [a["provider"] for a in err["attempts"]] == ["dead", "dead"]
        assert err["attempts"][0]["status"] == 0
