"""Builders for catalogue objects in unit tests (one place, so every test builds them alike)."""

from __future__ import annotations

from typing import Any

from gateway.catalogue.catalogue import Target
from gateway.catalogue.schema import Price, Variant


def make_target(
    provider: str, v: Variant, *, price: tuple[float, float] | None = (1.0, 1.0), **kw: Any
) -> Target:
    """A deployment of ``v`` at ``provider``; any Target field can be overridden by keyword."""
    fields: dict[str, Any] = {
        "id": f"{provider}/{v.id}",
        "provider": provider,
        "variant": v,
        "model": f"{provider}-{v.id}",
        "adapter": "openai",
        "dialect": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "k",
        "capabilities": v.capabilities,
        "context": v.context,
        "max_output": None,
        "price": None
        if price is None
        else Price(input=price[0], output=price[1], as_of="2026-01", source="test"),
        "builtin_tools": frozenset(),
        "weight": 1,
        "priority": 0,
        "rpm": None,
        "tpm": None,
        "timeout": None,
        "litellm_model": None,
    }
    fields.update(kw)
    return Target(**fields)
