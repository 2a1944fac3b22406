"""Routing through the real gateway and simulator with the openai SDK: each capability, each
combination, pins, aliases, policies and provider restrictions. No faults are injected here.
"""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from tests.support.e2e import (
    FUNCTION_TOOL,
    VARIANTS,
    assert_glm_headers,
    image_msg,
    nonce,
    sim_requests,
    text_msg,
    upstream_hits,
)
from tests.support.procs import Proc

VISION = {"glm-4.6v", "glm-4.5v", "glm-4v-9b"}
FUNCTION_CALLING = {"glm-4.7", "glm-4.6v", "glm-4.5v"}
STRUCTURED = {
    "glm-4.7",
    "glm-4-32b",
    "glm-4.7-2501",
    "glm-4.5",
    "glm-4.7-flash",
    "glm-4.5-air",
    "glm-4.6",
}
WINDOW_198K = {"glm-4.7", "glm-4.7-flash", "glm-4.6"}
AT_MOST_9B = {"glm-4-code-9b", "glm-4-air-4b", "glm-4-9b", "glm-4v-9b"}
AT_LEAST_300B = {"glm-4.7", "glm-4.7-2501", "glm-4.5", "glm-4.6"}


async def ask(
    client: openai.AsyncOpenAI,
    messages: list[dict[str, Any]],
    model: str = "auto",
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[Any, dict[str, str]]:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=messages, extra_headers=headers or {}, **kw
    )
    resp = raw.parse()
    hdrs = {k.lower(): v for k, v in raw.headers.items()}
    assert_glm_headers(hdrs)
    assert hdrs["x-glm-variant"] == resp.model, "X-GLM-Variant must name the variant that answered"
    return resp, hdrs


async def no_capable(
    client: openai.AsyncOpenAI,
    messages: list[dict[str, Any]],
    model: str = "auto",
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as ei:
        await client.chat.completions.create(
            model=model, messages=messages, extra_headers=headers or {}, **kw
        )
    exc = ei.value
    assert exc.status_code == 400
    assert_glm_headers(exc.response.headers)
    assert exc.response.headers["x-glm-attempts"] == "0"
    body = exc.response.json()
    err: dict[str, Any] = body["error"]
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "no_capable_variant"
    assert "Rejected" in err["message"]
    return err


# --- the catalogue ---------------------------------------------------------------------------


async def test_models_list_has_16_variants_and_auto(client: openai.AsyncOpenAI) -> None:
    page = await client.models.list()
    ids = [m.id for m in page.data]
    assert sorted(ids) == sorted([*VARIANTS, "auto"])
    assert len(ids) == len(set(ids)) == 17


async def test_auto_picks_a_variant_and_upstream_gets_its_model_id(
    client: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    resp, hdrs = await ask(client, text_msg(f"plain question {tag}"))
    assert resp.model in VARIANTS
    assert hdrs["x-glm-attempts"] == "1"
    assert "x-glm-fallback-reason" not in hdrs
    assert resp.choices[0].message.content
    hits = upstream_hits(simulator, tag)
    assert len(hits) == 1
    assert hits[0][0] == hdrs["x-glm-provider"]


async def test_glm_4_is_an_alias_of_auto(client: openai.AsyncOpenAI) -> None:
    resp, _ = await ask(client, text_msg("hi"), model="glm-4")
    assert resp.model in VARIANTS


async def test_client_request_id_is_echoed(client: openai.AsyncOpenAI) -> None:
    rid = "req-client-" + nonce()
    _, hdrs = await ask(client, text_msg("hi"), headers={"X-Request-Id": rid})
    assert hdrs["x-request-id"] == rid


# --- one capability at a time ----------------------------------------------------------------


async def test_image_input_routes_to_a_vision_variant(client: openai.AsyncOpenAI) -> None:
    resp, _ = await ask(client, image_msg("what is in this picture?"))
    assert resp.model in VISION


async def test_function_tools_route_to_function_calling_and_get_a_tool_call(
    client: openai.AsyncOpenAI,
) -> None:
    resp, _ = await ask(client, text_msg("weather in Paris?"), tools=[FUNCTION_TOOL])
    assert resp.model in FUNCTION_CALLING
    calls = resp.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(orjson.loads(calls[0].function.arguments), dict)
    assert resp.choices[0].finish_reason == "tool_calls"


async def test_legacy_functions_need_function_calling(client: openai.AsyncOpenAI) -> None:
    resp, _ = await ask(
        client,
        text_msg("weather?"),
        functions=[FUNCTION_TOOL["function"]],  # type: ignore[list-item]
    )
    assert resp.model in FUNCTION_CALLING


async def test_json_schema_routes_to_structured_outputs(client: openai.AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    resp, _ = await ask(
        client,
        text_msg("describe a person"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    assert resp.model in STRUCTURED
    data = orjson.loads(resp.choices[0].message.content)
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)


async def test_code_interpreter_tool_routes_to_glm_4_7(
    client: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    resp, hdrs = await ask(
        client,
        text_msg(f"compute 2**100 {tag}"),
        tools=[{"type": "code_interpreter"}],  # type: ignore[list-item]
    )
    assert resp.model == "glm-4.7"
    # only the first-party hosts run code_interpreter
    assert hdrs["x-glm-provider"] in {"zai", "bigmodel"}
    (sent,) = sim_requests(simulator, tag)
    assert sent["body"]["tools"] == [{"type": "code_interpreter"}]


async def test_declared_code_execution_routes_to_glm_4_7(client: openai.AsyncOpenAI) -> None:
    resp, _ = await ask(
        client, text_msg("run some code"), headers={"X-GLM-Capabilities": "code_execution"}
    )
    assert resp.model == "glm-4.7"


async def test_web_search_tool_needs_a_host_that_runs_it(client: openai.AsyncOpenAI) -> None:
    resp, hdrs = await ask(
        client,
        text_msg("news today?"),
        tools=[{"type": "web_search", "web_search": {"enable": True}}],  # type: ignore[list-item]
    )
    assert hdrs["x-glm-provider"] in {"zai", "bigmodel"}
    assert resp.model in VARIANTS


# --- context ---------------------------------------------------------------------------------


async def test_declared_190k_lands_on_a_198k_variant(client: openai.AsyncOpenAI) -> None:
    resp, _ = await ask(client, text_msg("long job"), headers={"X-GLM-Min-Context": "190k"})
    assert resp.model in WINDOW_198K


async def test_route_body_field_declares_context_and_is_not_forwarded(
    client: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    resp, _ = await ask(
        client, text_msg(f"long job {tag}"), extra_body={"route": {"min_context": 190000}}
    )
    assert resp.model in WINDOW_198K
    (sent,) = sim_requests(simulator, tag)
    assert "route" not in sent["body"]


async def test_inferred_190k_prompt_lands_on_a_198k_variant(
    client: openai.AsyncOpenAI, simulator: Proc
) -> None:
    # ~190,000 cl100k tokens ("a " is one token each) in 380 KB.
    tag = nonce()
    big = f"{tag} " + "a " * 190_000
    resp, hdrs = await ask(client, text_msg(big), max_tokens=256)
    assert resp.model in WINDOW_198K
    assert hdrs["x-glm-attempts"] == "1"


async def test_max_tokens_counts_toward_the_context_need(client: openai.AsyncOpenAI) -> None:
    # a small prompt, but 150k of requested output only fits the 198k+ windows
    resp, _ = await ask(client, text_msg("write a lot"), max_tokens=150_000)
    assert resp.model in WINDOW_198K


# --- combinations ----------------------------------------------------------------------------


async def test_vision_tools_and_100k_land_on_glm_4_6v(client: openai.AsyncOpenAI) -> None:
    resp, _ = await ask(
        client,
        image_msg("weather where this photo was taken?"),
        tools=[FUNCTION_TOOL],
        headers={"X-GLM-Min-Context": "100000"},
    )
    assert resp.model == "glm-4.6v"


async def test_declared_vision_and_function_calling_land_on_a_capable_variant(
    client: openai.AsyncOpenAI,
) -> None:
    resp, _ = await ask(
        client, text_msg("hi"), headers={"X-GLM-Capabilities": "vision,function_calling"}
    )
    assert resp.model in VISION & FUNCTION_CALLING


async def test_structured_outputs_and_190k(client: openai.AsyncOpenAI) -> None:
    resp, _ = await ask(
        client,
        text_msg("summarise"),
        headers={"X-GLM-Capabilities": "structured_outputs", "X-GLM-Min-Context": "190k"},
    )
    assert resp.model in STRUCTURED & WINDOW_198K


async def test_params_bounds(client: openai.AsyncOpenAI) -> None:
    small, _ = await ask(client, text_msg("hi"), headers={"X-GLM-Params": "<=9B"})
    assert small.model in AT_MOST_9B
    big, _ = await ask(client, text_msg("hi"), headers={"X-GLM-Params": ">=300B"})
    assert big.model in AT_LEAST_300B
    small_vision, _ = await ask(client, image_msg("what is it?"), headers={"X-GLM-Params": "<=9B"})
    assert small_vision.model == "glm-4v-9b"


@pytest.mark.parametrize(
    ("messages_kind", "kwargs", "headers", "unmet_word"),
    [
        ("image", {}, {"X-GLM-Capabilities": "code_execution"}, "code_execution"),
        ("image", {}, {"X-GLM-Min-Context": "150k"}, "context"),
        ("text", {"tools": [FUNCTION_TOOL]}, {"X-GLM-Params": "<=9B"}, "function_calling"),
        ("image", {"tools": [FUNCTION_TOOL]}, {"X-GLM-Min-Context": "190k"}, "vision"),
        ("text", {}, {"X-GLM-Min-Context": "250k"}, "context"),
        ("text", {}, {"X-GLM-Capabilities": "code_execution", "X-GLM-Params": "<100B"}, "params"),
        (
            "text",
            {"tools": [{"type": "code_interpreter"}]},
            {"X-GLM-Providers": "novita"},
            "code_interpreter",
        ),
    ],
)
async def test_impossible_combinations_get_no_capable_variant(
    client: openai.AsyncOpenAI,
    messages_kind: str,
    kwargs: dict[str, Any],
    headers: dict[str, str],
    unmet_word: str,
) -> None:
    msgs = image_msg("look") if messages_kind == "image" else text_msg("hi")
    err = await no_capable(client, msgs, headers=headers, **kwargs)
    assert unmet_word in err["message"]
    assert any(unmet_word in u for u in err["unmet"])
    # every variant is accounted for, with a reason
    rejected_variants = {r["variant"] for r in err["rejected"]}
    assert rejected_variants == set(VARIANTS)
    assert all(r["reasons"] for r in err["rejected"])


async def test_no_capable_error_marks_declared_and_inferred(client: openai.AsyncOpenAI) -> None:
    err = await no_capable(
        client, image_msg("look"), headers={"X-GLM-Capabilities": "code_execution"}
    )
    assert "vision (inferred)" in err["unmet"]
    assert "code_execution (declared)" in err["unmet"]


# --- pinned models and aliases ---------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
async def test_each_variant_can_be_pinned(
    client: openai.AsyncOpenAI, simulator: Proc, variant: str
) -> None:
    tag = nonce()
    resp, hdrs = await ask(client, text_msg(f"hello {tag}"), model=variant)
    assert resp.model == variant
    assert hdrs["x-glm-variant"] == variant
    hits = upstream_hits(simulator, tag)
    assert [p for p, _ in hits] == [hdrs["x-glm-provider"]]


async def test_pinned_variant_is_not_substituted_for_a_missing_capability(
    client: openai.AsyncOpenAI,
) -> None:
    err = await no_capable(client, image_msg("look"), model="glm-4-9b")
    assert "model glm-4-9b" in err["unmet"]
    assert any("pinned" in " ".join(r["reasons"]) for r in err["rejected"])


async def test_pinned_variant_may_be_substituted_when_fallback_is_variants(
    client: openai.AsyncOpenAI,
) -> None:
    resp, _ = await ask(
        client, image_msg("look"), model="glm-4-9b", headers={"X-GLM-Fallback": "variants"}
    )
    assert resp.model in VISION


async def test_pinned_variant_with_provider_order(
    client: openai.AsyncOpenAI, simulator: Proc
) -> None:
    tag = nonce()
    resp, hdrs = await ask(
        client,
        text_msg(f"hi {tag}"),
        model="glm-4.7",
        headers={"X-GLM-Providers": "novita,deepinfra"},
    )
    assert resp.model == "glm-4.7"
    assert hdrs["x-glm-provider"] == "novita"
    assert upstream_hits(simulator, tag) == [("novita", "zai-org/glm-4.7")]


async def test_providers_header_restricts_auto(client: openai.AsyncOpenAI) -> None:
    resp, hdrs = await ask(client, text_msg("hi"), headers={"X-GLM-Providers": "siliconflow"})
    assert hdrs["x-glm-provider"] == "siliconflow"
    assert resp.model in {"glm-4.7", "glm-4.6", "glm-4.5v", "glm-4-32b", "glm-4-9b"}


@pytest.mark.parametrize(
    ("alias", "allowed"),
    [
        ("vision", VISION),
        ("long", {"glm-4.7", "glm-4.7-flash", "glm-4.6"}),
        ("code", {"glm-4-code-9b", "glm-4.7", "glm-4.6"}),
        ("cheap", set(VARIANTS)),
    ],
)
async def test_aliases(client: openai.AsyncOpenAI, alias: str, allowed: set[str]) -> None:
    msgs = image_msg("look") if alias == "vision" else text_msg("hi")
    resp, _ = await ask(client, msgs, model=alias)
    assert resp.model in allowed


# --- policies --------------------------------------------------------------------------------


async def test_prefer_quality_and_newest_pick_glm_4_7(client: openai.AsyncOpenAI) -> None:
    for policy in ("quality", "newest"):
        resp, _ = await ask(client, text_msg("hi"), headers={"X-GLM-Prefer": policy})
        assert resp.model == "glm-4.7", policy


async def test_prefer_cost_picks_a_free_deployment(client: openai.AsyncOpenAI) -> None:
    resp, hdrs = await ask(client, text_msg("hi"), headers={"X-GLM-Prefer": "cost"})
    # zero-priced deployments exist (free flash tiers, self-hosted vLLM)
    assert (hdrs["x-glm-provider"], resp.model) in {
        ("zai", "glm-4.7-flash"),
        ("bigmodel", "glm-4.7-flash"),
        ("bigmodel", "glm-4-flash"),
    } or hdrs["x-glm-provider"] == "vllm"


async def test_fallback_none_still_routes(client: openai.AsyncOpenAI) -> None:
    resp, hdrs = await ask(client, text_msg("hi"), headers={"X-GLM-Fallback": "none"})
    assert resp.model in VARIANTS and hdrs["x-glm-attempts"] == "1"
