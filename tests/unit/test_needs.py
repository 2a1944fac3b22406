"""What a request needs: declared (headers, body ``route``) and inferred (the body)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.catalogue.catalogue import Config
from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import (
    infer,
    merge_sources,
    parse_capabilities,
    parse_choice,
    parse_context,
    parse_declared,
    parse_params,
    parse_timeout,
    resolve_needs,
)
from gateway.catalogue.schema import POLICIES, RouteAlias
from gateway.catalogue.tokens import PromptTokens
from gateway.errors import InvalidRequest, NotFound
from tests.support.procs import CONFIG

PROVIDERS = frozenset({"zai", "bigmodel", "novita"})
IMG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")


def body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


# --- header value parsers --------------------------------------------------------------------


def test_capabilities_from_string_or_list() -> None:
    assert parse_capabilities("vision, Function_Calling", "H") == {"vision", "function_calling"}
    assert parse_capabilities(["tool_use"], "H") == {"tool_use"}


@pytest.mark.parametrize("value", ["telepathy", "vision,x", "", " , ", 5, ["vision", 3]])
def test_bad_capabilities_name_where(value: Any) -> None:
    with pytest.raises(InvalidRequest) as ei:
        parse_capabilities(value, "X-GLM-Capabilities")
    assert ei.value.param == "X-GLM-Capabilities"
    assert "X-GLM-Capabilities" in ei.value.message
    assert ei.value.status == 400


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("150000", 150_000),
        ("150k", 150_000),
        ("150K", 150_000),
        (" 1.5m ", 1_500_000),
        ("0.5k", 500),
        ("131072", 131_072),
        (64000, 64_000),
        ("1.0001k", 1001),  # rounds up: a need is never under-stated
    ],
)
def test_context_values(value: Any, tokens: int) -> None:
    assert parse_context(value, "X-GLM-Min-Context") == tokens


@pytest.mark.parametrize("value", ["lots", "", "0", "-5k", "10g", "1e5", True, 0, -1, "200000000"])
def test_bad_context_values(value: Any) -> None:
    with pytest.raises(InvalidRequest) as ei:
        parse_context(value, "X-GLM-Min-Context")
    assert ei.value.param == "X-GLM-Min-Context"


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        ("<=9B", (("<=", 9.0),)),
        (">= 32b", ((">=", 32.0),)),
        ("9", (("=", 9.0),)),
        ("<100B,>4B", (("<", 100.0), (">", 4.0))),
        ("=106B", (("=", 106.0),)),
    ],
)
def test_params_bounds(value: str, bounds: tuple[tuple[str, float], ...]) -> None:
    assert parse_params(value, "X-GLM-Params") == bounds


@pytest.mark.parametrize("value", ["about 9B", "<=nineB", "=>9B", "9T", "", ",", "<=9B,>=x"])
def test_bad_params(value: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        parse_params(value, "X-GLM-Params")
    assert ei.value.param == "X-GLM-Params"


def test_choices_are_case_insensitive_and_strict() -> None:
    assert parse_choice(" Quality ", "X-GLM-Prefer", POLICIES) == "quality"
    for bad in ("cheapest", "", None, 3):
        with pytest.raises(InvalidRequest):
            parse_choice(bad, "X-GLM-Prefer", POLICIES)


@pytest.mark.parametrize(("value", "seconds"), [("30", 30.0), ("0.5", 0.5), (3600, 3600.0)])
def test_timeouts(value: Any, seconds: float) -> None:
    assert parse_timeout(value, "X-GLM-Timeout") == seconds


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf", "3601", None, ""])
def test_bad_timeouts(value: Any) -> None:
    with pytest.raises(InvalidRequest) as ei:
        parse_timeout(value, "X-GLM-Timeout")
    assert ei.value.param == "X-GLM-Timeout"


# --- declarations: headers and body route ----------------------------------------------------


def test_headers_and_route_merge() -> None:
    d = parse_declared(
        {
            "x-glm-capabilities": "vision",
            "x-glm-min-context": "100k",
            "x-glm-prefer": "latency",
            "x-glm-providers": "Novita,zai,novita",
        },
        {"capabilities": ["function_calling"], "min_context": 50_000, "fallback": "none"},
        PROVIDERS,
    )
    assert d.capabilities == {"vision", "function_calling"}  # united
    assert d.min_context == 100_000  # the header wins
    assert d.policy == "latency"
    assert d.fallback == "none"  # from route
    assert d.providers == ("novita", "zai")  # lower-cased, de-duplicated, order kept


def test_nothing_declared() -> None:
    d = parse_declared({}, None, PROVIDERS)
    assert d.capabilities == frozenset() and d.min_context is None and d.params == ()
    assert d.policy is d.fallback is d.providers is d.timeout is None


@pytest.mark.parametrize(
    ("headers", "route", "where"),
    [
        ({"x-glm-providers": "zai,nowhere"}, None, "X-GLM-Providers"),
        ({"x-glm-fallback": "maybe"}, None, "X-GLM-Fallback"),
        ({}, {"colour": "red"}, "route"),
        ({}, "vision", "route"),
        ({}, {"min_context": "big"}, "route.min_context"),
        ({}, {"providers": ["mars"]}, "route.providers"),
        ({}, {"timeout": 0}, "route.timeout"),
    ],
)
def test_bad_declarations_name_where(headers: dict[str, str], route: Any, where: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        parse_declared(headers, route, PROVIDERS)
    assert ei.value.param == where
    assert where in ei.value.message


def test_unknown_provider_error_lists_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as ei:
        parse_declared({"x-glm-providers": "mars"}, None, PROVIDERS)
    assert "bigmodel, novita, zai" in ei.value.message


# --- inference from the body -----------------------------------------------------------------


@pytest.mark.parametrize(
    "part",
    [
        IMG,
        {"type": "input_image", "image_url": "https://x/y.png"},
        {"type": "video_url", "video_url": {"url": "https://x/y.mp4"}},
    ],
)
def test_media_parts_need_vision(part: dict[str, Any]) -> None:
    got = infer({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]})
    assert got.capabilities == {"vision"} and got.images


def test_image_in_an_earlier_message_counts() -> None:
    msgs = [
        {"role": "user", "content": [IMG]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "and its colour?"},
    ]
    assert infer({"messages": msgs}).images


@pytest.mark.parametrize(
    ("extra", "caps", "builtin"),
    [
        ({"tools": [FN]}, {"function_calling"}, set()),
        ({"functions": [{"name": "f"}]}, {"function_calling"}, set()),
        ({"tools": [{"type": "web_search"}]}, {"tool_use"}, {"web_search"}),
        ({"tools": [{"type": "retrieval"}]}, {"tool_use"}, {"retrieval"}),
        ({"tools": [{"type": "code_interpreter"}]}, {"code_execution"}, {"code_interpreter"}),
        (
            {"tools": [FN, {"type": "web_search"}]},
            {"function_calling", "tool_use"},
            {"web_search"},
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            {"structured_outputs"},
            set(),
        ),
        ({"response_format": {"type": "json_object"}}, set(), set()),
        ({"response_format": {"type": "text"}}, set(), set()),
        ({"tools": []}, set(), set()),
        ({"functions": []}, set(), set()),
    ],
)
def test_inferred_capabilities(extra: dict[str, Any], caps: set[str], builtin: set[str]) -> None:
    got = infer(body(**extra))
    assert got.capabilities == caps
    assert got.builtin_tools == builtin
    assert not got.images


@pytest.mark.parametrize(
    ("extra", "tokens"),
    [
        ({}, None),
        ({"max_tokens": 500}, 500),
        ({"max_completion_tokens": 700}, 700),
        ({"max_completion_tokens": 700, "max_tokens": 500}, 700),
        ({"max_tokens": None}, None),
    ],
)
def test_output_tokens(extra: dict[str, Any], tokens: int | None) -> None:
    assert infer(body(**extra)).output_tokens == tokens


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_completion_tokens": "9"}, "max_completion_tokens"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": ["function"]}, "tools[0]"),
        ({"tools": [FN, {"type": "teleport"}]}, "tools[1].type"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema",
        ),
    ],
)
def test_bad_body_fields(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        infer(body(**extra))
    assert ei.value.param == param


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (None, "messages"),
        ([], "messages"),
        ("hi", "messages"),
        ([{"content": "hi"}], "messages[0]"),
        ([{"role": "user", "content": "a"}, "b"], "messages[1]"),
        ([{"role": "user", "content": {"text": "x"}}], "messages[0].content"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": 5}],
            "messages[1].tool_calls",
        ),
        ([{"role": "assistant", "tool_calls": ["call"]}], "messages[0].tool_calls"),
    ],
)
def test_bad_messages(messages: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        infer({"messages": messages})
    assert ei.value.param == param


def test_null_content_is_fine() -> None:
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "content": "42", "tool_call_id": "c"},
    ]
    assert infer({"messages": msgs}).capabilities == frozenset()


def test_merge_sources_marks_each_capability() -> None:
    merged = merge_sources(
        frozenset({"vision", "tool_use"}), frozenset({"vision", "function_calling"})
    )
    assert merged == {
        "vision": "declared+inferred",
        "function_calling": "inferred",
        "tool_use": "declared",
    }


# --- the whole picture -----------------------------------------------------------------------


def test_auto_uses_the_configured_defaults(config: Config) -> None:
    n = resolve_needs(body(), {}, config)
    routing = config.gateway.routing
    assert n.pinned is None and n.alias is None and n.allowed_variants is None
    assert n.policy == routing.default_policy
    assert n.fallback == routing.default_fallback
    assert n.output_tokens == routing.default_output_reserve and not n.output_declared
    assert n.capabilities == {}
    assert n.context_need() == n.prompt.best + routing.default_output_reserve


def test_glm_4_is_auto(config: Config) -> None:
    n = resolve_needs({**body(), "model": "glm-4"}, {}, config)
    assert n.pinned is None


def test_pinned_model_defaults_to_provider_fallback(config: Config) -> None:
    n = resolve_needs({**body(), "model": "glm-4.6v"}, {}, config)
    assert n.pinned == "glm-4.6v" and n.fallback == "providers"
    n = resolve_needs({**body(), "model": "glm-4.6v"}, {"x-glm-fallback": "variants"}, config)
    assert n.fallback == "variants"


def test_declared_and_inferred_are_marked(config: Config) -> None:
    b = body(tools=[FN])
    b["messages"][0]["content"] = [{"type": "text", "text": "x"}, IMG]
    n = resolve_needs(b, {"x-glm-capabilities": "function_calling,structured_outputs"}, config)
    assert n.capabilities == {
        "vision": "inferred",
        "function_calling": "declared+inferred",
        "structured_outputs": "declared",
    }
    assert n.images


def test_context_need_is_the_larger_of_declared_and_inferred(config: Config) -> None:
    small = resolve_needs(body(max_tokens=100), {"x-glm-min-context": "150k"}, config)
    assert small.context_need() == 150_000
    assert small.output_tokens == 100 and small.output_declared
    big = resolve_needs(body(max_tokens=190_000), {"x-glm-min-context": "1k"}, config)
    assert big.context_need() == big.prompt.best + 190_000 > 190_000


def test_fits_checks_both_declared_minimum_and_room(config: Config) -> None:
    n = resolve_needs(body(max_tokens=1000), {"x-glm-min-context": "64k"}, config)
    assert n.fits(64_000) and n.fits(200_000)
    assert not n.fits(63_999)
    m = resolve_needs(body("a " * 5000, max_tokens=1000), {}, config)
    assert m.fits(10_000)
    assert not m.fits(5_500)
    assert not m.fits(1000)  # no room left at all


def test_alias_brings_its_constraints(config: Config) -> None:
    n = resolve_needs({**body(), "model": "long"}, {}, config)
    assert n.alias == "long" and n.pinned is None
    assert n.min_context == 190_000
    v = resolve_needs({**body(), "model": "vision"}, {}, config)
    assert v.capabilities == {"vision": "declared"}
    c = resolve_needs({**body(), "model": "code"}, {"x-glm-prefer": "newest"}, config)
    assert c.allowed_variants == {"glm-4-code-9b", "glm-4.7", "glm-4.6"}
    assert c.policy == "newest"  # the request's header narrows/overrides the alias
    best = resolve_needs({**body(), "model": "best"}, {}, config)
    assert best.policy == "quality"


def test_alias_min_context_and_declared_take_the_larger(config: Config) -> None:
    n = resolve_needs({**body(), "model": "long"}, {"x-glm-min-context": "10k"}, config)
    assert n.min_context == 190_000
    m = resolve_needs({**body(), "model": "long"}, {"x-glm-min-context": "195k"}, config)
    assert m.min_context == 195_000


@pytest.mark.parametrize("model", [None, "", 5, ["auto"]])
def test_model_is_required(config: Config, model: Any) -> None:
    b = body()
    b["model"] = model
    with pytest.raises(InvalidRequest) as ei:
        resolve_needs(b, {}, config)
    assert ei.value.param == "model"


def test_unknown_model_is_not_found_listing_choices(config: Config) -> None:
    with pytest.raises(NotFound) as ei:
        resolve_needs({**body(), "model": "gpt-4o"}, {}, config)
    assert ei.value.status == 404 and ei.value.code == "model_not_found"
    assert "glm-4.7" in ei.value.message and "auto" in ei.value.message


def test_timeout_and_providers_pass_through(config: Config) -> None:
    n = resolve_needs(body(), {"x-glm-timeout": "2.5", "x-glm-providers": "zai"}, config)
    assert n.timeout == 2.5 and n.providers == ("zai",)


def test_prompt_tokens_never_under_count(config: Config) -> None:
    text = "word " * 1000
    n = resolve_needs(body(text), {}, config)
    assert n.prompt.upper >= n.prompt.best >= 1000
    assert not math.isinf(n.prompt.best)


# --- the fast paths give what the general ones give -----------------------------------------

_TEXT = st.text(max_size=20)
_PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _TEXT}),
    st.just(IMG),
)
_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool"]),
        "content": st.one_of(st.none(), _TEXT, st.lists(_PART, max_size=3)),
    },
    optional={"name": _TEXT, "tool_calls": st.one_of(st.none(), st.just([{"id": "c1"}]))},
)
_BODY = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "glm-4.7", "cheap", "long", "coding"])},
    optional={
        "max_tokens": st.integers(1, 10_000),
        "max_completion_tokens": st.integers(1, 10_000),
        "tool_choice": st.sampled_from(["auto", "required", {"type": "function"}]),
    },
).flatmap(lambda b: st.lists(_MESSAGE, min_size=1, max_size=4).map(lambda m: {**b, "messages": m}))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_BODY)
def test_infer_without_tools_is_what_empty_tools_infer(b: dict[str, Any]) -> None:
    """The usual body (no tools, functions or response_format) skips the tool walk: the
    same answer as the walk over empty lists gives."""
    got = infer(b)
    assert got == infer({**b, "tools": []}) == infer({**b, "functions": []})
    assert got == infer({**b, "response_format": {"type": "text"}})


_DECLARED = st.sampled_from([{}, {"x-glm-min-context": "20k"}, {"x-glm-prefer": "quality"}])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=_BODY, declared=_DECLARED)
def test_needs_without_an_alias_are_an_empty_alias_s(
    config: Config, b: dict[str, Any], declared: dict[str, str]
) -> None:
    """A model that is no alias takes the declarations alone; an alias that constrains nothing
    (the general path) gives the same needs but for its name."""
    aliases = {**config.gateway.aliases, "plain": RouteAlias()}
    gateway = config.gateway.model_copy(update={"aliases": aliases})
    with_plain = dataclasses.replace(config, gateway=gateway)
    model = b["model"]
    if model in config.gateway.aliases:
        return
    direct = resolve_needs(b, declared, with_plain)
    via = resolve_needs({**b, "model": "plain"}, declared, with_plain)
    assert direct.alias is None and via.alias == "plain"
    fields = [f.name for f in dataclasses.fields(direct) if f.name not in ("alias", "prompt")]
    if model != "auto":  # a pinned variant falls back across providers only
        fields.remove("pinned")
        fields.remove("fallback")
    assert {f: getattr(direct, f) for f in fields} == {f: getattr(via, f) for f in fields}
    assert direct.prompt.upper == via.prompt.upper


_ANY_MESSAGE = st.one_of(
    _MESSAGE,
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "tool"]), "content": _TEXT},
        optional={
            "tool_call_id": _TEXT,
            "image_url": st.sampled_from(["", "https://x/a.png", {"url": "u"}]),
            "n": st.integers(0, 3),
        },
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(_ANY_MESSAGE, min_size=1, max_size=5),
    tools=st.sampled_from([None, [], [FN]]),
)
def test_prompt_gathered_in_the_message_check_is_prompt_tokens_own(
    config: Config, messages: list[dict[str, Any]], tools: list[Any] | None
) -> None:
    """The needs resolver gathers the prompt's texts in the walk that checks the messages: the
    same texts, in the same order, and the same figures as :class:`PromptTokens` finds."""
    b = {"model": "auto", "messages": messages}
    if tools is not None:
        b["tools"] = tools
    got = resolve_needs(b, {}, config).prompt
    want = PromptTokens(messages, tools, config.tokens)
    assert got._texts == want._texts  # order too: a counter remembers them in it
    assert (got.upper, got.best, got.exact()) == (want.upper, want.best, want.exact())
