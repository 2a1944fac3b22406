"""Builders for catalogue objects in unit tests (one place, so every test builds them alike)."""

from __future__ import annotations

from typing import Any

from gateway.catalogue.catalogue import Catalogue, Config
from gateway.catalogue.schema import GatewayFile, Price, ProviderConfig, RoutingConfig, Variant
from gateway.catalogue.target import Target


def make_variant(vid: str, **kw: Any) -> Variant:
    """A 9B, 128k-context variant named ``vid``; any Variant field can be overridden."""
    fields: dict[str, Any] = {
        "id": vid,
        "name": vid,
        "released": "2025-01",
        "context": 128_000,
        "params_total_b": 9,
        "quality": 50,
    }
    fields.update(kw)
    return Variant(**fields)


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


def make_config(
    targets: list[Target], variants: list[Variant] | None = None, **routing: Any
) -> Config:
    """A Config over exactly these deployments (and variants: by default theirs), with the
    routing settings given and the defaults for the rest."""
    vs = variants or list({t.variant.id: t.variant for t in targets}.values())
    by: dict[str, tuple[Target, ...]] = {v.id: () for v in vs}
    for t in targets:
        by[t.variant.id] = (*by[t.variant.id], t)
    providers = {t.provider: ProviderConfig(name=t.provider, deployments=[]) for t in targets}
    cat = Catalogue(
        variants={v.id: v for v in vs},
        targets=tuple(targets),
        by_variant=by,
        providers=providers,
    )
    gw = GatewayFile(routing=RoutingConfig(**routing))
    return Config(gateway=gw, catalogue=cat, source_dir="<test>")
