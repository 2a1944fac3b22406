"""One deployment (a variant served by one provider): the unit the router attempts.

Its own module so that the catalogue and its planner index (:mod:`.plan_index`) both take it
from below, with no import circle between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.catalogue.schema import DEFAULT_SURFACE, Adapter, Dialect, Price, Variant


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
    api_key: str | None = field(repr=False)
    """Never in a repr (a log line or an exception that prints a target)."""
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
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    litellm_params: tuple[tuple[str, object], ...] = field(default=(), repr=False)
    messages_url: str | None = None
    """The host's native Anthropic Messages URL, when it has one (``anthropic_base_url``)."""
    surface: str = DEFAULT_SURFACE
    """Which of the provider's surfaces (``api``, ``coding`` ...) this deployment is on."""
    surface_rank: int = 0
    """Its place in the provider's ``surface_order``; -1: left out (used only by keys that
    name the surface)."""

    @property
    def account(self) -> tuple[str, str, str | None]:
        """(provider, surface, key): what one refusal of our key or quota holds for. Z.ai's
        one key answers 1113 (no balance) on the general surface and serves the Coding Plan."""
        return self.provider, self.surface, self.api_key

    @property
    def deployment(self) -> tuple[str, str, str]:
        """(provider, variant, model): the same deployment on every surface."""
        return self.provider, self.variant.id, self.model

    @property
    def accepts_images(self) -> bool:
        return "vision" in self.capabilities or (
            self.variant.multimodal and "vision" not in self.removed_capabilities
        )

    @property
    def removed_capabilities(self) -> frozenset[str]:
        return self.variant.capabilities - self.capabilities

    @property
    def has_own_limits(self) -> bool:
        """An rpm or tpm of its own: only such a deployment keeps request/token counts."""
        return self.rpm is not None or self.tpm is not None

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        if self.price is None:
            return 0.0
        return (prompt_tokens * self.price.input + completion_tokens * self.price.output) / 1e6
