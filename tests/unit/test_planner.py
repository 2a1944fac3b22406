"""The pure planner: needs + catalogue -> ordered candidates and explained rejections.

Two kinds of catalogue: the shipped config (as the simulator serves it) for the real routing
promises, and small hand-built ones to pin down each rule on its own.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from gateway.catalogue.catalogue import Config
from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import Needs, resolve_needs
from gateway.catalogue.schema import Variant
from gateway.catalogue.target import Target
from gateway.routing.planner import Plan, plan
from tests.support.catalogue import make_config as config_of
from tests.support.catalogue import make_target
from tests.support.catalogue import make_variant as variant
from tests.support.procs import CONFIG

IMG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def shipped() -> Config:
    return load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")


def chat(
    text: str = "hi", model: str = "auto", image: bool = False, **extra: Any
) -> dict[str, Any]:
    content: Any = [{"type": "text", "text": text}, IMG] if image else text
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def run(
    config: Config,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[Plan, Needs]:
    needs = resolve_needs(body, headers or {}, config)
    return plan(needs, config.catalogue, config.gateway.routing, **kw), needs


def variants_of(p: Plan) -> list[str]:
    return list(dict.fromkeys(c.target.variant.id for c in p.candidates))


def reasons(p: Plan, variant: str, provider: str | None = None) -> list[str]:
    return [
        why
        for r in p.rejected
        if r.variant == variant and r.provider == provider
        for why in r.reasons
    ]


# --- the shipped catalogue: the routing promises ---------------------------------------------


def test_vision_tools_100k_is_glm_4_6v_only(shipped: Config) -> None:
    p, _ = run(shipped, chat(image=True, tools=[FN]), {"x-glm-min-context": "100k"})
    assert variants_of(p) == ["glm-4.6v"]
    assert "context 64000 < need 100000" in reasons(p, "glm-4.5v")
    assert "no function_calling" in reasons(p, "glm-4v-9b")


def test_190k_is_a_198k_variant(shipped: Config) -> None:
    p, _ = run(shipped, chat(), {"x-glm-min-context": "190k"})
    assert set(variants_of(p)) == {"glm-4.7", "glm-4.7-flash", "glm-4.6"}
    # glm-4.7-2501 (128k in the catalogue) is not rescued by a host's larger window
    assert any("context 128000" in why for why in reasons(p, "glm-4.7-2501"))


def test_code_execution_is_glm_4_7(shipped: Config) -> None:
    p, _ = run(shipped, chat(), {"x-glm-capabilities": "code_execution"})
    assert variants_of(p) == ["glm-4.7"]
    q, _ = run(shipped, chat(tools=[{"type": "code_interpreter"}]))
    assert {(c.target.provider, c.target.variant.id) for c in q.candidates} == {
        ("zai", "glm-4.7"),
        ("bigmodel", "glm-4.7"),
    }
    assert any("code_interpreter" in why for why in reasons(q, "glm-4.7", "novita"))


def test_impossible_combination_has_no_candidate_and_lists_unmet(shipped: Config) -> None:
    p, _ = run(shipped, chat(image=True), {"x-glm-capabilities": "code_execution"})
    assert p.candidates == []
    assert "vision (inferred)" in p.unmet and "code_execution (declared)" in p.unmet
    assert any(u.startswith("context >= ") for u in p.unmet)
    assert {r.variant for r in p.rejected} == set(shipped.catalogue.variants)


def test_multimodal_flag_counts_as_image_input(shipped: Config) -> None:
    p, _ = run(shipped, chat(image=True), {"x-glm-params": "<=9B"})
    assert variants_of(p) == ["glm-4v-9b"]


def test_provider_surface_override_removes_a_capability(shipped: Config) -> None:
    # Z.ai and BigModel serve GLM-4.5V without tools (capabilities_remove in providers.yaml)
    p, _ = run(shipped, chat(image=True, tools=[FN]), {"x-glm-fallback": "variants"})
    providers_45v = {c.target.provider for c in p.candidates if c.target.variant.id == "glm-4.5v"}
    assert providers_45v and not providers_45v & {"zai", "bigmodel"}
    assert "this provider's surface has no function_calling" in reasons(p, "glm-4.5v", "zai")


def test_provider_window_smaller_than_the_variant(shipped: Config) -> None:
    # Novita serves GLM-4-32B with a 32K window; the variant has 128K
    p, _ = run(shipped, chat(model="glm-4-32b"), {"x-glm-min-context": "64k"})
    assert "novita" not in {c.target.provider for c in p.candidates}
    assert any("provider window 32000" in why for why in reasons(p, "glm-4-32b", "novita"))


def test_unknown_context_serves_only_up_to_the_floor(shipped: Config) -> None:
    floor = shipped.gateway.routing.unknown_context_floor
    ok, _ = run(shipped, chat(model="glm-4-extreme", max_tokens=100))
    assert variants_of(ok) == ["glm-4-extreme"]
    p, _ = run(shipped, chat(model="glm-4-extreme"), {"x-glm-min-context": str(floor + 1)})
    assert p.candidates == []
    assert any(f"floor {floor}" in why for why in reasons(p, "glm-4-extreme"))


def test_unknown_params_fail_any_bound(shipped: Config) -> None:
    p, _ = run(shipped, chat(), {"x-glm-params": ">=1B"})
    for vid in ("glm-4-extreme", "glm-4-air", "glm-4-flash"):
        assert any("parameter size unknown" in why for why in reasons(p, vid))
    assert "glm-4-9b" in variants_of(p)


def test_pinned_stays_pinned_unless_variants_allowed(shipped: Config) -> None:
    p, _ = run(shipped, chat(model="glm-4.5"))
    assert variants_of(p) == ["glm-4.5"]
    assert len(p.candidates) > 1  # its providers
    assert reasons(p, "glm-4.7") == ["model pinned to glm-4.5"]
    q, _ = run(shipped, chat(model="glm-4.5"), {"x-glm-fallback": "variants"})
    vs = variants_of(q)
    assert vs[0] == "glm-4.5" and len(vs) > 1  # the pinned variant first, then the rest


def test_alias_restricts_variants(shipped: Config) -> None:
    p, _ = run(shipped, chat(model="code"))
    assert set(variants_of(p)) <= {"glm-4-code-9b", "glm-4.7", "glm-4.6"}
    assert reasons(p, "glm-4.5") == ["not in alias 'code'"]


def test_providers_header_filters_and_orders(shipped: Config) -> None:
    p, _ = run(shipped, chat(model="glm-4.7"), {"x-glm-providers": "deepinfra,zai"})
    assert [c.target.provider for c in p.candidates] == ["deepinfra", "zai"]
    assert reasons(p, "glm-4.7", "novita") == ["provider not in X-GLM-Providers"]


def test_open_circuit_is_skipped_with_a_reason(shipped: Config) -> None:
    base, _ = run(shipped, chat(model="glm-4.6"))
    first = base.candidates[0].target
    p, _ = run(shipped, chat(model="glm-4.6"), open_circuits={first.id: 12.0})
    assert first.id not in {c.target.id for c in p.candidates}
    assert "circuit open for 12s more" in reasons(p, "glm-4.6", first.provider)
    assert len(p.candidates) == len(base.candidates) - 1


def test_fallback_modes_trim(shipped: Config) -> None:
    full, _ = run(shipped, chat(), {"x-glm-fallback": "variants"})
    prov, _ = run(shipped, chat(), {"x-glm-fallback": "providers"})
    none, _ = run(shipped, chat(), {"x-glm-fallback": "none"})
    assert len(none.candidates) == 1
    assert len(variants_of(prov)) == 1 and len(prov.candidates) >= 1
    assert len(variants_of(full)) > 1
    assert none.candidates[0] == prov.candidates[0] == full.candidates[0]
    assert [c.target.id for c in prov.candidates] == [
        c.target.id for c in full.candidates if c.target.variant.id == variants_of(prov)[0]
    ]


def test_cost_policy_orders_by_estimated_cost(shipped: Config) -> None:
    p, _ = run(shipped, chat(model="glm-4.7"), {"x-glm-prefer": "cost"})
    scores = [c.score for c in p.candidates]
    assert scores == sorted(scores)
    assert p.candidates[-1].score == float("inf")  # unpriced deployments come last
    assert p.candidates[0].target.provider == "bigmodel"  # the cheapest glm-4.7 price
    assert all(c.basis == "estimated cost USD" for c in p.candidates)


def test_quality_and_newest_policies(shipped: Config) -> None:
    q, _ = run(shipped, chat(), {"x-glm-prefer": "quality"})
    qualities = [c.target.variant.quality for c in q.candidates]
    assert qualities == sorted(qualities, reverse=True)
    assert q.candidates[0].target.variant.id == "glm-4.7"
    n, _ = run(shipped, chat(), {"x-glm-prefer": "newest"})
    released = [c.target.variant.released for c in n.candidates]
    assert released == sorted(released, reverse=True)


def test_plan_is_pure_and_deterministic(shipped: Config) -> None:
    needs = resolve_needs(chat(image=True), {}, shipped)
    before = copy.deepcopy(needs.capabilities)
    a = plan(needs, shipped.catalogue, shipped.gateway.routing)
    b = plan(needs, shipped.catalogue, shipped.gateway.routing)
    assert [c.target.id for c in a.candidates] == [c.target.id for c in b.candidates]
    assert a.rejected == b.rejected
    assert needs.capabilities == before


CAPS = ["vision", "function_calling", "tool_use", "structured_outputs", "code_execution"]


@pytest.mark.parametrize(
    ("caps", "ctx", "params"),
    list(
        itertools.product(
            [
                (),
                *[(c,) for c in CAPS],
                ("vision", "function_calling"),
                ("structured_outputs", "function_calling"),
            ],
            [None, "30k", "100k", "131072", "190k"],
            [None, "<=9B", ">=100B"],
        )
    ),
)
def test_every_candidate_meets_every_need(
    shipped: Config, caps: tuple[str, ...], ctx: str | None, params: str | None
) -> None:
    headers: dict[str, str] = {}
    if caps:
        headers["x-glm-capabilities"] = ",".join(caps)
    if ctx:
        headers["x-glm-min-context"] = ctx
    if params:
        headers["x-glm-params"] = params
    p, needs = run(shipped, chat(), headers)
    for c in p.candidates:
        t, v = c.target, c.target.variant
        for cap in caps:
            if cap == "vision":
                assert t.accepts_images and v.accepts_images, t.id
            else:
                assert cap in t.capabilities and cap in v.capabilities, (t.id, cap)
        window = (
            v.context if v.context is not None else shipped.gateway.routing.unknown_context_floor
        )
        assert needs.fits(window), t.id
        if t.context is not None:
            assert needs.fits(t.context), t.id
        if params:
            assert v.params_total_b is not None
            bound = float(params[2:-1])
            assert (
                v.params_total_b <= bound if params.startswith("<=") else v.params_total_b >= bound
            )
    if not p.candidates:
        assert p.unmet
    # every variant is either a candidate or rejected with a reason
    seen = set(variants_of(p)) | {r.variant for r in p.rejected}
    assert seen == set(shipped.catalogue.variants)
    assert all(r.reasons for r in p.rejected)


# --- hand-built catalogues: one rule at a time -----------------------------------------------


def target(provider: str, v: Variant, **kw: Any) -> Target:
    return make_target(provider, v, **kw)


def test_cost_ties_break_on_active_params_then_priority_then_weight() -> None:
    big = variant("big", params_total_b=300, params_active_b=30)
    small = variant("small", params_total_b=100, params_active_b=10)
    cfg = config_of(
        [
            target("a", big, price=(1, 1)),
            target("b", small, price=(1, 1), priority=1),
            target("c", small, price=(1, 1), priority=0, weight=1),
            target("d", small, price=(1, 1), priority=0, weight=5),
        ]
    )
    p, _ = run(cfg, chat())
    assert [c.target.id for c in p.candidates] == ["d/small", "c/small", "b/small", "a/big"]


def test_latency_policy_prefers_observed_then_prior() -> None:
    big = variant("big", params_total_b=300, params_active_b=30)
    small = variant("small", params_total_b=9)
    cfg = config_of([target("a", big), target("b", small), target("c", small)])
    p, _ = run(cfg, chat(), {"x-glm-prefer": "latency"})
    assert p.candidates[0].target.variant.id == "small"  # smaller prior
    q, _ = run(cfg, chat(), {"x-glm-prefer": "latency"}, latency={"a/big": 0.01, "b/small": 5.0})
    assert [c.target.id for c in q.candidates] == ["a/big", "c/small", "b/small"]
    assert q.candidates[0].score == 0.01
    assert q.candidates[0].basis.startswith("latency")


def test_unpriced_ranks_after_priced_under_cost() -> None:
    v = variant("v")
    cfg = config_of([target("free", v, price=None), target("paid", v, price=(5, 5))])
    p, _ = run(cfg, chat())
    assert [c.target.provider for c in p.candidates] == ["paid", "free"]


def test_builtin_tool_needs_a_host_that_runs_it() -> None:
    v = variant("v", capabilities=frozenset({"tool_use"}))
    cfg = config_of(
        [
            target("plain", v, price=(0, 0)),
            target("search", v, price=(9, 9), builtin_tools=frozenset({"web_search"})),
        ]
    )
    p, _ = run(cfg, chat(tools=[{"type": "web_search"}]))
    assert [c.target.provider for c in p.candidates] == ["search"]
    assert reasons(p, "v", "plain") == ["does not run tool web_search"]


def test_variant_without_deployments_is_rejected_with_reason() -> None:
    a, b = variant("a"), variant("b")
    cfg = config_of([target("p", a)], variants=[a, b])
    p, _ = run(cfg, chat())
    assert variants_of(p) == ["a"]
    assert any("no deployment" in why for why in reasons(p, "b"))


def test_output_tokens_count_toward_the_window() -> None:
    v = variant("v", context=8000)
    cfg = config_of([target("p", v)], default_output_reserve=1000)
    ok, _ = run(cfg, chat(max_tokens=7000))
    assert ok.candidates
    too_much, _ = run(cfg, chat(max_tokens=8000))
    assert too_much.candidates == []
    assert any("context 8000 < need" in why for why in reasons(too_much, "v"))


def test_reserve_applies_when_no_max_tokens() -> None:
    v = variant("v", context=8000)
    small_reserve = config_of([target("p", v)], default_output_reserve=1000)
    huge_reserve = config_of([target("p", v)], default_output_reserve=8000)
    assert run(small_reserve, chat())[0].candidates
    assert not run(huge_reserve, chat())[0].candidates


def test_deployment_capabilities_add_makes_the_variant_eligible_there_only() -> None:
    v = variant("v")
    cfg = config_of(
        [
            target("plain", v, price=(0, 0)),
            target("plus", v, price=(9, 9), capabilities=frozenset({"function_calling"})),
        ]
    )
    p, _ = run(cfg, chat(tools=[{"type": "function", "function": {"name": "f"}}]))
    assert [c.target.provider for c in p.candidates] == ["plus"]
    assert reasons(p, "v", "plain") == ["this provider's surface has no function_calling"]


def test_declared_code_execution_needs_a_host_that_runs_code() -> None:
    v = variant("v", capabilities=frozenset({"code_execution"}))
    cfg = config_of(
        [
            target("third", v, price=(0, 0)),
            target("first", v, price=(9, 9), builtin_tools=frozenset({"code_interpreter"})),
        ]
    )
    p, _ = run(cfg, chat(), {"x-glm-capabilities": "code_execution"})
    assert [c.target.provider for c in p.candidates] == ["first"]
    assert reasons(p, "v", "third") == [
        "this host runs no code_interpreter tool (needed for code_execution)"
    ]
