"""The runtime catalogue: variants and the deployments (targets) that serve them, frozen.

Built once at start by :func:`gateway.catalogue.loader.load_config`; read-only afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.catalogue.schema import (
    Adapter,
    Dialect,
    GatewayFile,
    Price,
    ProviderConfig,
    Variant,
)


@dataclass(frozen=True, slots=True)
class Target:
    """One deployment: a variant served by one provider. The unit the router attempts."""

    id: str
    """``"<provider>/<variant>"``: stable key for breakers, limits and metrics."""
    provider: str
    variant: Variant
    model: str
    """The provider's model id sent upstream."""
    adapter: Adapter
    dialect: Dialect
    base_url: str | None
    api_key: str | None
    capabilities: frozenset[str]
    context: int | None
    max_output: int | None
    price: Price | None
    builtin_tools: frozenset[str]
    weight: int
    priority: int
    rpm: int | None
    tpm: int | None
    timeout: float | None
    litellm_model: str | None
    headers: tuple[tuple[str, str], ...] = ()
    litellm_params: tuple[tuple[str, object], ...] = ()

    @property
    def accepts_images(self) -> bool:
        return "vision" in self.capabilities or (
            self.variant.multimodal and "vision" not in self.removed_capabilities
        )

    @property
    def removed_capabilities(self) -> frozenset[str]:
        return self.variant.capabilities - self.capabilities

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        if self.price is None:
            return 0.0
        return (prompt_tokens * self.price.input + completion_tokens * self.price.output) / 1e6


@dataclass(frozen=True, slots=True)
class SkippedDeployment:
    provider: str
    variant: str
    reason: str


@dataclass(frozen=True)
class Catalogue:
    variants: dict[str, Variant]
    """By id, in the order of ``models.yaml``."""
    targets: tuple[Target, ...]
    by_variant: dict[str, tuple[Target, ...]]
    providers: dict[str, ProviderConfig]
    skipped: tuple[SkippedDeployment, ...] = ()

    def targets_for(self, variant_id: str) -> tuple[Target, ...]:
        return self.by_variant.get(variant_id, ())


@dataclass(frozen=True)
class Config:
    """Everything loaded from the config directory, cross-checked and frozen."""

    gateway: GatewayFile
    catalogue: Catalogue
    source_dir: str
    warnings: tuple[str, ...] = field(default=())
