"""A deployment's prices read once (``Target.rates``) and the bill worked out inline: the same
floats, bit for bit, as the price model's own figures gave (the code before, kept here)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.loader import default_config_dir, load_config
from gateway.catalogue.schema import Price
from gateway.catalogue.target import Target, bill

CONFIG = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")
TARGETS = sorted(CONFIG.catalogue.targets, key=lambda t: t.id)
_ANY = TARGETS[0]
_PRICES = [
    None,
    Price(input=0.6, output=2.2, as_of="2026-01", source="x"),
    Price(input=0.6, output=2.2, cached_input=0.11, as_of="2026-01", source="x"),
    Price(input=0.07, output=0.4, cached_input=0.0, as_of="2026-01", source="x"),
]
_TARGETS = [*TARGETS, *(dataclasses.replace(_ANY, price=p) for p in _PRICES)]
_COUNT = st.one_of(st.integers(-5, 10**7), st.sampled_from([True, None, 1.5, "7"]))


def reference_micros(target: Target, prompt: int, completion: int, cached: int) -> float:
    """``Target.cost_micros`` as it read the price model on each call."""
    price = target.price
    if price is None:
        return 0.0
    cached = min(max(cached, 0), prompt)
    rate = price.input if price.cached_input is None else price.cached_input
    return (prompt - cached) * price.input + cached * rate + completion * price.output


def reference_cached(usage: Any) -> int:
    details = usage.get("prompt_tokens_details")
    n = details.get("cached_tokens") if isinstance(details, dict) else None
    if n is None:
        n = usage.get("cached_tokens", usage.get("cache_read_input_tokens"))
    return n if isinstance(n, int) and n > 0 else 0


@settings(max_examples=400, deadline=None)
@given(
    target=st.sampled_from(_TARGETS),
    usage=st.fixed_dictionaries(
        {},
        optional={
            "prompt_tokens": _COUNT,
            "completion_tokens": _COUNT,
            "prompt_tokens_details": st.one_of(
                st.none(), st.fixed_dictionaries({}, optional={"cached_tokens": _COUNT})
            ),
            "cached_tokens": _COUNT,
            "cache_read_input_tokens": _COUNT,
            "total_tokens": _COUNT,
        },
    ),
)
def test_the_inline_bill_is_the_price_model_s(target: Target, usage: dict[str, Any]) -> None:
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    p, c = (p if isinstance(p, int) else 0), (c if isinstance(c, int) else 0)
    cached = min(reference_cached(usage), p) if usage else 0
    want = reference_micros(target, p, c, cached) if usage else 0.0
    got = bill(target, usage)
    assert got[:4] == (p, c, cached, want)
    assert repr(got[3]) == repr(want)  # bit for bit (== would let -0.0 pass for 0.0)


@settings(max_examples=300, deadline=None)
@given(
    target=st.sampled_from(_TARGETS),
    prompt=st.integers(-5, 10**8),
    completion=st.integers(-5, 10**8),
    cached=st.integers(-5, 10**8),
)
def test_cost_micros_is_the_price_model_s(
    target: Target, prompt: int, completion: int, cached: int
) -> None:
    got = target.cost_micros(prompt, completion, cached)
    assert repr(got) == repr(reference_micros(target, prompt, completion, cached))


def test_the_rates_follow_the_price() -> None:
    for target in _TARGETS:
        price = target.price
        if price is None:
            assert target.rates is None
        else:
            cached = price.input if price.cached_input is None else price.cached_input
            assert target.rates == (price.input, cached, price.output)
        assert target.variant_id == target.variant.id
