"""The runtime catalogue: variants and the deployments (targets) that serve them, frozen.

Built once at start by :func:`gateway.catalogue.loader.load_config`; read-only afterwards. A
:class:`Catalogue` pre-digests itself for the planner once, at construction
(:class:`~gateway.catalogue.plan_index.PlanIndex`: deployment bitmasks, prices, sort-key
ranks), so planning a request is a few mask operations and sorts.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.catalogue.plan_index import PlanIndex, build_index
from gateway.catalogue.schema import (
    GatewayFile,
    ProviderConfig,
    RouteAlias,
    Variant,
)
from gateway.catalogue.target import Target
from gateway.catalogue.tokens import TokenCounter

__all__ = [
    "Catalogue",
    "Config",
    "RequestDefaults",
    "SkippedDeployment",
    "Target",
    "config_secrets",
]


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
    index: PlanIndex = field(init=False, repr=False, compare=False)
    """The planner's pre-digested view, built at construction."""
    provider_names: frozenset[str] = field(init=False, repr=False, compare=False)
    """``providers``' keys (what ``X-GLM-Providers`` may name)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", build_index(self.variants, self.by_variant))
        object.__setattr__(self, "provider_names", frozenset(self.providers))

    def targets_for(self, variant_id: str) -> tuple[Target, ...]:
        return self.by_variant.get(variant_id, ())


@dataclass(frozen=True, slots=True)
class RequestDefaults:
    """What resolving a request's needs reads from the config on every request, as plain slots:
    a pydantic model's attribute costs ~10x a slot's to read (its ``__getattr__`` hook keeps
    CPython 3.11 from specialising the read)."""

    variants: dict[str, Variant]
    aliases: dict[str, RouteAlias]
    max_messages: int
    default_policy: str
    default_fallback: str
    output_reserve: int

    @classmethod
    def of(cls, gateway: GatewayFile, catalogue: Catalogue) -> RequestDefaults:
        routing = gateway.routing
        return cls(
            catalogue.variants,
            gateway.aliases,
            gateway.limits.max_messages,
            routing.default_policy,
            routing.default_fallback,
            routing.default_output_reserve,
        )


@dataclass(frozen=True)
class Config:
    """Everything loaded from the config directory, cross-checked and frozen."""

    gateway: GatewayFile
    catalogue: Catalogue
    source_dir: str
    warnings: tuple[str, ...] = field(default=())
    tokens: TokenCounter = field(default_factory=TokenCounter, repr=False, compare=False)
    """The process's prompt token counter: it remembers the cl100k count of each text it
    tokenized (bounded). The one runtime cache here, built with the config at start and
    shared by every request."""

    @functools.cached_property
    def defaults(self) -> RequestDefaults:
        """The settings the needs resolver reads per request, digested once (not a field: a
        config rebuilt from another's fields gets its own)."""
        return RequestDefaults.of(self.gateway, self.catalogue)


SECRET_FIELD = re.compile(r"key|secret|token|passw|credential|auth|signature|cookie", re.I)
"""Provider ``headers`` / ``litellm_params`` names whose values are secrets."""
LITELLM_ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
"""Environment variables LiteLLM reads credentials from itself (Bedrock's SigV4)."""


def config_secrets(config: Config, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every secret the config holds, for :class:`gateway.observability.redact.Redactor`.

    Provider API keys, the values of secret-looking provider ``headers`` and ``litellm_params``
    (and a header's token without its ``Bearer`` scheme), the master key, the Redis and
    database URLs' passwords, ``logging.redact``, and the AWS credentials LiteLLM reads from
    ``environ`` (default ``os.environ``) when a provider uses it.
    """
    env = os.environ if environ is None else environ
    gw = config.gateway
    found: list[str] = [t.api_key for t in config.catalogue.targets if t.api_key]
    for provider in config.catalogue.providers.values():
        for name, value in provider.headers.items():
            if SECRET_FIELD.search(name):
                found += [value, *value.split()[1:]]
        for name, param in provider.litellm_params.items():
            if SECRET_FIELD.search(name):
                found += _strings(param)
        if provider.adapter == "litellm":
            found += [env[n] for n in LITELLM_ENV_SECRETS if env.get(n)]
    if gw.auth.master_key:
        found.append(gw.auth.master_key)
    if gw.state.redis_url:
        found.append(urlsplit(gw.state.redis_url).password or "")
    found += [gw.state.redis_password or "", gw.state.redis_sentinel_password or ""]
    if gw.database.url:
        found.append(urlsplit(gw.database.url).password or "")
    found += gw.logging.redact
    return tuple(dict.fromkeys(s for s in found if s))


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
