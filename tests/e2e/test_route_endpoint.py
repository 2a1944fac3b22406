"""``POST /v1/route``: needs (declared / inferred), ranked candidates, rejections; no upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from tests.support.e2e import (
    AUTH,
    FUNCTION_TOOL,
    VARIANTS,
    assert_error_shape,
    assert_glm_headers,
    chat_body,
    image_msg,
    nonce,
    sim_requests,
    text_msg,
)
from tests.support.procs import Proc


@pytest_asyncio.fixture
async def http(gateway: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=30) as c:
        yield c


async def route(
    http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], httpx.Headers]:
    r = await http.post("/v1/route", json=body, headers=headers or {})
    return r.status_code, r.json(), r.headers


async def test_explains_without_calling_upstream(http: httpx.AsyncClient, simulator: Proc) -> None:
    tag = nonce()
    status, out, headers = await route(http, chat_body(text_msg(f"hi {tag}")))
    assert status == 200
    assert_glm_headers(headers)
    assert headers["x-glm-attempts"] == "0"
    assert out["candidates"], out
    assert headers["x-glm-variant"] == out["candidates"][0]["variant"]
    assert headers["x-glm-provider"] == out["candidates"][0]["provider"]
    assert sim_requests(simulator, tag) == []


async def test_needs_mark_declared_and_inferred(http: httpx.AsyncClient) -> None:
    status, out, _ = await route(
        http,
        chat_body(image_msg("look"), tools=[FUNCTION_TOOL], max_tokens=1000),
        {
            "X-GLM-Capabilities": "function_calling",
            "X-GLM-Min-Context": "100k",
            "X-GLM-Prefer": "quality",
            "X-GLM-Fallback": "providers",
            "X-GLM-Timeout": "30",
        },
    )
    assert status == 200
    needs = out["needs"]
    assert needs["capabilities"] == {"vision": "inferred", "function_calling": "declared+inferred"}
    ctx = needs["context"]
    assert ctx["declared_min"] == 100_000 and ctx["need"] == 100_000
    assert ctx["output_tokens"] == 1000 and ctx["output_tokens_source"] == "request"
    assert ctx["prompt_tokens"] > 0
    assert needs["policy"] == "quality" and needs["fallback"] == "providers"
    assert needs["timeout_s"] == 30
    assert {c["variant"] for c in out["candidates"]} == {"glm-4.6v"}


async def test_candidates_are_ranked_with_scores(http: httpx.AsyncClient) -> None:
    status, out, _ = await route(http, chat_body(text_msg("hi"), model="glm-4.7"))
    assert status == 200
    cands = out["candidates"]
    assert [c["rank"] for c in cands] == list(range(1, len(cands) + 1))
    assert {c["variant"] for c in cands} == {"glm-4.7"}
    assert len({c["provider"] for c in cands}) == len(cands) >= 5
    for c in cands:
        assert c["score_basis"] and c["deployment"].startswith(c["provider"] + "/")
        assert c["upstream_model"]
    # cost policy: known costs ascending, unknown (null) last
    known = [c["score"] for c in cands if c["score"] is not None]
    assert known == sorted(known)
    nulls = [i for i, c in enumerate(cands) if c["score"] is None]
    assert nulls == list(range(len(cands) - len(nulls), len(cands)))
    assert out["needs"]["pinned"] == "glm-4.7"


async def test_every_rejected_variant_has_a_reason(http: httpx.AsyncClient) -> None:
    status, out, _ = await route(
        http, chat_body(text_msg("hi")), {"X-GLM-Capabilities": "code_execution"}
    )
    assert status == 200
    assert {c["variant"] for c in out["candidates"]} == {"glm-4.7"}
    rejected = {r["variant"]: r for r in out["rejected"] if r["provider"] is None}
    assert set(rejected) == set(VARIANTS) - {"glm-4.7"}
    assert all("no code_execution" in r["reasons"] for r in rejected.values())


async def test_surface_rejections_name_the_provider(http: httpx.AsyncClient) -> None:
    status, out, _ = await route(
        http,
        chat_body(text_msg("hi"), tools=[{"type": "code_interpreter"}]),
    )
    assert status == 200
    assert {(c["variant"], c["provider"]) for c in out["candidates"]} == {
        ("glm-4.7", "zai"),
        ("glm-4.7", "bigmodel"),
    }
    surface = [r for r in out["rejected"] if r["variant"] == "glm-4.7" and r["provider"]]
    assert {r["provider"] for r in surface} >= {"openrouter", "novita", "deepinfra"}
    assert all(any("code_interpreter" in why for why in r["reasons"]) for r in surface)
    assert out["needs"]["capabilities"] == {"code_execution": "inferred"}
    assert out["needs"]["builtin_tools"] == ["code_interpreter"]


async def test_context_rejections_state_window_and_need(http: httpx.AsyncClient) -> None:
    _, out, _ = await route(http, chat_body(text_msg("hi")), {"X-GLM-Min-Context": "190k"})
    by_variant = {r["variant"]: r["reasons"] for r in out["rejected"] if r["provider"] is None}
    assert any("context 128000" in why and "190000" in why for why in by_variant["glm-4.5"])
    assert {c["variant"] for c in out["candidates"]} <= {"glm-4.7", "glm-4.7-flash", "glm-4.6"}


async def test_no_candidate_answers_200_with_the_error_inside(http: httpx.AsyncClient) -> None:
    status, out, headers = await route(
        http, chat_body(image_msg("look")), {"X-GLM-Capabilities": "code_execution"}
    )
    assert status == 200
    assert out["candidates"] == []
    assert headers["x-glm-variant"] == "none"
    err = assert_error_shape(out)
    assert err["code"] == "no_capable_variant"
    assert "vision (inferred)" in out["unmet"]
    assert "code_execution (declared)" in out["unmet"]


async def test_provider_restriction_order_is_kept(http: httpx.AsyncClient) -> None:
    _, out, _ = await route(
        http, chat_body(text_msg("hi"), model="glm-4.6"), {"X-GLM-Providers": "together,zai"}
    )
    assert [c["provider"] for c in out["candidates"]] == ["together", "zai"]
    assert out["needs"]["providers"] == ["together", "zai"]


async def test_fallback_modes_trim_candidates(http: httpx.AsyncClient) -> None:
    _, variants, _ = await route(http, chat_body(text_msg("hi")), {"X-GLM-Fallback": "variants"})
    _, providers, _ = await route(http, chat_body(text_msg("hi")), {"X-GLM-Fallback": "providers"})
    _, none, _ = await route(http, chat_body(text_msg("hi")), {"X-GLM-Fallback": "none"})
    assert len(none["candidates"]) == 1
    assert len({c["variant"] for c in providers["candidates"]}) == 1
    assert len({c["variant"] for c in variants["candidates"]}) > 1
    assert none["candidates"][0] == providers["candidates"][0] == variants["candidates"][0]


async def test_route_field_in_body_is_read(http: httpx.AsyncClient) -> None:
    _, out, _ = await route(
        http, chat_body(text_msg("hi"), route={"capabilities": ["vision"], "min_context": "64k"})
    )
    assert out["needs"]["capabilities"] == {"vision": "declared"}
    assert out["needs"]["context"]["declared_min"] == 64_000


async def test_bad_header_is_400_naming_it(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/route", json=chat_body(text_msg("hi")), headers={"X-GLM-Prefer": "fastest"}
    )
    assert r.status_code == 400
    err = assert_error_shape(r.json())
    assert "X-GLM-Prefer" in err["message"] and err["param"] == "X-GLM-Prefer"
    assert r.headers.get("x-request-id")


async def test_bad_json_and_auth(http: httpx.AsyncClient, gateway: Proc) -> None:
    r = await http.post("/v1/route", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert assert_error_shape(r.json())["code"] == "invalid_json"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as anon:
        r = await anon.post("/v1/route", json=chat_body(text_msg("hi")))
    assert r.status_code == 401
    assert assert_error_shape(r.json())["type"] == "invalid_request_error"
