"""One deployment (a variant served by one provider): the unit the router attempts.

Its own module so that the catalogue and its planner index (:mod:`.plan_index`) both take it
from below, with no import circle between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

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

    account: tuple[str, str, str | None] = field(init=False, repr=False, compare=False)
    """(provider, surface, key): what one refusal of our key or quota holds for. Z.ai's one key
    answers 1113 (no balance) on the general surface and serves the Coding Plan. (Computed,
    like :attr:`has_own_limits`: the router and the limiter read them on every request.)"""
    has_own_limits: bool = field(init=False, repr=False, compare=False)
    """An rpm or tpm of its own: only such a deployment keeps request/token counts."""
    variant_id: str = field(init=False, repr=False, compare=False)
    """``variant.id`` (a pydantic read costs ~10x a slot's; answers are stamped with it)."""
    rates: tuple[float, float, float] | None = field(init=False, repr=False, compare=False)
    """USD per 1M input, cached input and output tokens (``price``'s, read once); None
    without a price."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", (self.provider, self.surface, self.api_key))
        object.__setattr__(self, "has_own_limits", self.rpm is not None or self.tpm is not None)
        object.__setattr__(self, "variant_id", self.variant.id)
        price = self.price
        rates = None
        if price is not None:
            cached = price.input if price.cached_input is None else price.cached_input
            rates = (price.input, cached, price.output)
        object.__setattr__(self, "rates", rates)

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

    def cost_usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD of one answer; ``cached_tokens`` (part of ``prompt_tokens``) at the cached rate."""
        return self.cost_micros(prompt_tokens, completion_tokens, cached_tokens) / 1e6

    def cost_micros(self, prompt_tokens: int, completion_tokens: int, cached: int = 0) -> float:
        """Micro-USD of one answer (prices are per 1M tokens), unrounded."""
        rates = self.rates
        if rates is None:
            return 0.0
        # min(max(cached, 0), prompt_tokens), without the builtins' argument parsing (hot).
        if cached < 0:
            cached = 0
        if prompt_tokens < cached:
            cached = prompt_tokens
        fresh_rate, cached_rate, output_rate = rates
        fresh = prompt_tokens - cached
        return fresh * fresh_rate + cached * cached_rate + completion_tokens * output_rate


Bill = tuple[int, int, int, float, bool]
"""What one answer's ``usage`` comes to on its deployment (:func:`bill`): prompt tokens,
completion tokens, cached prompt tokens (at most the prompt), unrounded micro-USD, and whether
the usage counted both prompt and completion (only then is it charged rather than the lease)."""


_ANTHROPIC_CACHED: Final = "cache_read_input_tokens"


def bill(target: Target, usage: dict[str, Any] | None) -> Bill:
    """:data:`Bill` of ``usage`` on ``target``: worked out once per request (by the router, for
    the lease's settlement), read again by the access record. A count that is not an int is 0."""
    if not usage:
        return 0, 0, 0, 0.0, False
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    counted = True
    if not isinstance(p, int):
        p, counted = 0, False
    if not isinstance(c, int):
        c, counted = 0, False
    if "prompt_tokens_details" in usage or "cached_tokens" in usage or _ANTHROPIC_CACHED in usage:
        cached = cached_tokens(usage)
    else:  # the usual usage: nothing about a cache
        cached = 0
    if p < cached:
        cached = p
    # target.cost_micros(p, c, cached), inline (hot): here 0 <= cached <= p, or cached == p < 0,
    # and that method's clamps leave either as it is.
    rates = target.rates
    if rates is None:
        return p, c, cached, 0.0, counted
    return p, c, cached, (p - cached) * rates[0] + cached * rates[1] + c * rates[2], counted


def cached_tokens(usage: Any) -> int:
    """Prompt tokens a host read from its prompt cache, as its usage says: OpenAI's and GLM's
    ``prompt_tokens_details.cached_tokens``, Anthropic's ``cache_read_input_tokens``, or the
    flat ``cached_tokens`` of a native answer's usage; 0 when it says nothing."""
    if not isinstance(usage, dict):
        return 0
    details = usage.get("prompt_tokens_details")
    n = details.get("cached_tokens") if isinstance(details, dict) else None
    if n is None:
        if "cached_tokens" in usage:
            n = usage["cached_tokens"]
        elif "cache_read_input_tokens" in usage:
            n = usage["cache_read_input_tokens"]
        else:  # the usual usage: nothing about a cache
            return 0
    return n if isinstance(n, int) and n > 0 else 0
