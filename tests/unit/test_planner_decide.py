"""The planner's two ways through: ``explain=False`` (the hot path) decides exactly as
``explain=True`` (``/v1/route``) does, and both rank with one prompt figure.

A seeded random matrix of requests (bodies, headers, key restrictions, open circuits,
saturation, observed latency) over the shipped catalogue and a hand-built one with every
surface quirk: capability additions/removals, host tools, per-deployment windows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from gateway.catalogue.catalogue import Config
from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import Needs, resolve_needs
from gateway.catalogue.schema import Variant
from gateway.catalogue.target import Target
from gateway.errors import GatewayError
from gateway.routing.planner import Plan, plan
from tests.support.catalogue import make_config, make_target
from tests.support.catalogue import make_variant as _variant
from tests.support.cl100k import needs_cl100k
from tests.support.procs import CONFIG

CAPS = ["vision", "function_calling", "tool_use", "structured_outputs", "code_execution"]
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
    {"type": "web_search"},
    {"type": "retrieval"},
    {"type": "code_interpreter"},
    {"type": "mcp"},
]
IMG = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
WORDS = ["word ", "a ", "智谱清言", "x", "<|endoftext|> "]


@pytest.fixture(scope="module")
def shipped() -> Config:
    return load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")


def _target(provider: str, v: Variant, price: tuple[float, float] | None, **kw: Any) -> Target:
    return make_target(provider, v, price=price, **{"model": v.id, **kw})


@pytest.fixture(scope="module")
def quirky() -> Config:
    """Small windows, an unknown one, surface add/remove, host tools, equal prices."""
    a = _variant("a", context=16_000, capabilities=frozenset({"function_calling", "tool_use"}))
    b = _variant("b", context=None, params_total_b=None, multimodal=True, quality=70)
    c = _variant("c", context=64_000, capabilities=frozenset({"vision", "code_execution"}))
    d = _variant("d", context=9_000, released="2025-06", params_active_b=3, quality=60)
    targets = [
        _target("p", a, (1, 2), builtin_tools=frozenset({"web_search"})),
        _target("q", a, (1, 2), context=12_000, weight=3),
        _target("r", a, None, capabilities=frozenset({"function_calling"})),
        _target("p", b, (0.5, 0.5), capabilities=frozenset({"structured_outputs"})),
        _target("q", b, (0.5, 0.5), capabilities=frozenset({"vision"}), priority=1),
        _target("r", c, (2, 1), builtin_tools=frozenset({"code_interpreter", "mcp"})),
        _target("p", c, (2, 1), capabilities=frozenset({"code_execution"}), context=32_000),
        _target("q", d, (0.1, 3)),
    ]
    variants = [a, b, c, d, _variant("e")]  # e: no deployment
    return make_config(targets, variants, default_output_reserve=2000)


def _text(rng: random.Random) -> str:
    return rng.choice(WORDS) * rng.choice([1, 1, 40, 300, 800, 1500, 3000, 6000])


def _body(rng: random.Random, models: list[str]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": rng.choice(["user", "assistant", "system"]), "content": _text(rng)}
        for _ in range(rng.randint(1, 4))
    ]
    if rng.random() < 0.15:
        messages.append({"role": "user", "content": [{"type": "text", "text": "see"}, IMG]})
    body: dict[str, Any] = {"model": rng.choice(models), "messages": messages}
    if rng.random() < 0.3:
        body["tools"] = rng.sample(TOOLS, rng.randint(1, 3))
    if rng.random() < 0.2:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "a"}}
    if rng.random() < 0.4:
        body["max_tokens"] = rng.choice([16, 1000, 4000, 8000, 60_000, 150_000])
    if rng.random() < 0.15:
        body["tool_choice"] = rng.choice(["required", {"type": "function"}, "auto"])
    return body


def _headers(rng: random.Random, providers: list[str]) -> dict[str, str]:
    choices: dict[str, Callable[[], str]] = {
        "x-glm-capabilities": lambda: ",".join(rng.sample(CAPS, rng.randint(1, 2))),
        "x-glm-min-context": lambda: rng.choice(["8k", "9000", "13000", "30k", "100k", "190k"]),
        "x-glm-params": lambda: rng.choice(["<=9B", ">=100B", "<32", ">30B,<400B", "=9"]),
        "x-glm-prefer": lambda: rng.choice(["cost", "latency", "quality", "newest"]),
        "x-glm-fallback": lambda: rng.choice(["none", "providers", "variants"]),
        "x-glm-providers": lambda: ",".join(rng.sample(providers, rng.randint(1, 2))),
    }
    return {name: make() for name, make in choices.items() if rng.random() < 0.3}


def _state(rng: random.Random, ids: list[str]) -> dict[str, Any]:
    def some(p: float, most: int) -> list[str]:
        return rng.sample(ids, rng.randint(0, min(most, len(ids)))) if rng.random() < p else []

    return {
        "open_circuits": {t: rng.uniform(1, 99) for t in some(0.3, 6)},
        "saturated": {t: "rpm limit reached" for t in some(0.2, 6)},
        "latency": {t: rng.uniform(0.05, 3) for t in some(0.5, 30)},
    }


def _needs(config: Config, body: dict[str, Any], headers: dict[str, str], keep: Any) -> Needs:
    needs = resolve_needs(body, headers, config)
    if keep is not None:  # a key restricted to some variants (gateway.tenancy.limits.restrict)
        current = needs.allowed_variants
        needs.allowed_variants = keep if current is None else current & keep
    return needs


def _view(p: Plan) -> list[tuple[str, float, str]]:
    return [(c.target.id, c.score, c.basis) for c in p.candidates]


@pytest.mark.parametrize("which", ["shipped", "quirky"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_deciding_matches_explaining(which: str, seed: int, request: pytest.FixtureRequest) -> None:
    config: Config = request.getfixturevalue(which)
    cat, routing = config.catalogue, config.gateway.routing
    rng = random.Random(seed)
    models = ["auto", "glm-4", *cat.variants, *config.gateway.aliases]
    ids = [t.id for t in cat.targets]
    seen_candidates = seen_empty = 0
    for _ in range(250):
        body, headers = _body(rng, models), _headers(rng, sorted(cat.providers))
        keep = frozenset(rng.sample(list(cat.variants), 3)) if rng.random() < 0.1 else None
        state = _state(rng, ids)
        try:
            slow = _needs(config, body, headers, keep)
        except GatewayError:
            continue
        fast = _needs(config, body, headers, keep)
        explained = plan(slow, cat, routing, explain=True, **state)
        decided = plan(fast, cat, routing, explain=False, **state)
        assert _view(decided) == _view(explained), (body, headers, state)
        # the same windows were asked about: the prompt was tokenized in the same cases
        assert fast.prompt.method == slow.prompt.method
        if decided.candidates:
            seen_candidates += 1
            assert decided.rejected == [] and decided.unmet == []
        else:
            seen_empty += 1
            assert decided.rejected == explained.rejected and decided.unmet == explained.unmet
    assert seen_candidates > 20 and seen_empty > 5  # the matrix exercises both outcomes


def test_explain_false_still_explains_an_empty_plan(shipped: Config) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": [IMG]}]}
    needs = resolve_needs(body, {"x-glm-capabilities": "code_execution"}, shipped)
    p = plan(needs, shipped.catalogue, shipped.gateway.routing, explain=False)
    assert p.candidates == []
    assert {r.variant for r in p.rejected} == set(shipped.catalogue.variants)
    assert "vision (inferred)" in p.unmet and "code_execution (declared)" in p.unmet


@pytest.mark.parametrize("explain", [True, False])
@needs_cl100k
def test_every_cost_uses_the_same_prompt_figure(shipped: Config, explain: bool) -> None:
    # ~6k tokens in ~25 KB: the byte bound misses the 8192-token floor of the variants with an
    # unknown window, so planning tokenizes; every candidate is then costed on the exact count
    # (not the first variants on the bound and the rest on the count).
    messages = [{"role": "user", "content": "word " * 120 + str(i)} for i in range(41)]
    needs = resolve_needs({"model": "auto", "messages": messages}, {}, shipped)
    p = plan(needs, shipped.catalogue, shipped.gateway.routing, explain=explain)
    assert needs.prompt.method == "cl100k"
    assert p.candidates
    for c in p.candidates:
        price = c.target.price
        if price is not None:
            want = (needs.prompt.best * price.input + needs.output_tokens * price.output) / 1e6
            assert c.score == want, c.target.id


def test_key_restriction_and_alias_are_explained_as_before(quirky: Config) -> None:
    needs = resolve_needs(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}, {}, quirky
    )
    needs.allowed_variants = frozenset({"d"})
    p = plan(needs, quirky.catalogue, quirky.gateway.routing)
    assert [c.target.id for c in p.candidates] == ["q/d"]
    assert {r.variant: r.reasons for r in p.rejected}["a"] == ("not allowed for this key",)
