"""Load a config directory into a frozen :class:`~gateway.catalogue.catalogue.Config`.

Steps, once at start: read ``gateway.yaml`` (optional), ``models.yaml`` (required) and
``providers.yaml`` (optional); replace ``${VAR}`` / ``${VAR:-default}`` in every string value;
validate strictly with the models of :mod:`gateway.catalogue.schema`; cross-check; drop the
deployments whose API key is not set (with a warning); build the targets.

Every problem is a :class:`~gateway.errors.ConfigError` whose lines read
``<file>:<line>: <dotted.key[index]>: <what is wrong>`` (reading one file:
:mod:`gateway.catalogue.config_files`).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from gateway.catalogue.catalogue import Catalogue, Config, SkippedDeployment
from gateway.catalogue.config_files import Marks, read_file
from gateway.catalogue.schema import (
    DEFAULT_SURFACE,
    Deployment,
    GatewayFile,
    ModelsFile,
    ProviderConfig,
    ProvidersFile,
    Variant,
)
from gateway.catalogue.target import Target
from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.state.redis_target import target_problems

GATEWAY_FILE = "gateway.yaml"
MODELS_FILE = "models.yaml"
PROVIDERS_FILE = "providers.yaml"
RESERVED_MODEL_NAMES = frozenset({"auto", "glm-4"})
"""``model`` values that mean "choose among all variants"; no alias may take them."""
DEMO_API_KEY = "demo"
SIM_QUOTA_PATH = "/api/monitor/usage/quota/limit"
"""Where the simulator answers a provider's plan quota (``gateway.simulator.plans``)."""

_Model = TypeVar("_Model", bound=BaseModel)
_PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def default_config_dir() -> Path:
    """The config shipped inside the package, ``gateway/config/`` (package data of every
    install; ``glm-gateway init DIR`` writes an editable copy of it)."""
    return Path(__file__).resolve().parents[1] / "config"


def load_config(
    config_dir: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    demo_simulator_url: str | None = None,
) -> Config:
    """Read, validate and cross-check ``config_dir``; return the frozen config.

    ``environ`` defaults to ``os.environ``. With ``demo_simulator_url`` every provider is served
    by the simulator at ``{url}/{provider}/v1`` and no API key or environment variable is needed.

    Raises:
        ConfigError: a file is missing or unreadable, a key is unknown or invalid, or the files
            disagree with each other. One line per problem, naming the file, the line
            and the key.
    """
    root = Path(config_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: config directory not found")
    env: Mapping[str, str] = os.environ if environ is None else environ
    demo = demo_simulator_url is not None
    gw_path, prov_path, models_path = root / GATEWAY_FILE, root / PROVIDERS_FILE, root / MODELS_FILE
    if not models_path.is_file():
        raise ConfigError(f"{models_path}: file not found (the catalogue of variants is required)")
    problems: list[str] = []
    gateway, gw_marks = _read(problems, gw_path, GatewayFile, env, demo, default={})
    models, models_marks = _read(problems, models_path, ModelsFile, env, demo)
    prov_file, prov_marks = _read(
        problems, prov_path, ProvidersFile, env, demo, default={"providers": {}}
    )
    if problems:  # every file's problems at once; cross-checks need all three read
        raise ConfigError("\n".join(problems))
    assert gateway is not None and models is not None and prov_file is not None

    variants, problems = _check_variants(models, models_marks)
    providers, more = _merge_providers(gateway, gw_marks, prov_file, prov_marks)
    problems += more
    problems += [p for src in providers for p in _check_provider(src, variants)]
    problems += _check_gateway(gateway, gw_marks, variants, Settings.from_env(env))
    names = {src.name for src in providers}
    problems += [
        f"{gw_marks.at(('routing', 'affinity', 'provider_ttl_s', name))}: unknown provider "
        f"'{name}' (known: {', '.join(sorted(names))})"
        for name in gateway.routing.affinity.provider_ttl_s
        if name not in names
    ]
    if problems:
        raise ConfigError("\n".join(problems))

    warnings: list[str] = []
    if demo_simulator_url is not None:
        providers = _demo_rewrite(providers, demo_simulator_url.rstrip("/"), warnings)
    catalogue = _build_catalogue(variants, providers, env, demo, warnings)
    return Config(
        gateway=gateway, catalogue=catalogue, source_dir=str(root), warnings=tuple(warnings)
    )


def _read(
    problems: list[str],
    path: Path,
    model: type[_Model],
    env: Mapping[str, str],
    demo: bool,
    default: Any = None,
) -> tuple[_Model | None, Marks]:
    """:func:`read_file`, its problems added to ``problems`` instead of raised."""
    try:
        return read_file(path, model, env, demo, default)
    except ConfigError as exc:
        problems.extend(str(exc).splitlines())
        return None, Marks(str(path))


# --- cross-checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Provider:
    name: str
    config: ProviderConfig
    marks: Marks
    """The file it is defined in, with its key lines."""

    def at(self, *loc: int | str) -> str:
        return self.marks.at(("providers", self.name, *loc))


def _check_variants(models: ModelsFile, marks: Marks) -> tuple[dict[str, Variant], list[str]]:
    if not models.variants:
        return {}, [f"{marks.at(('variants',))}: at least one variant is required"]
    problems = []
    first: dict[str, int] = {}
    for i, variant in enumerate(models.variants):
        if variant.id in first:
            problems.append(
                f"{marks.at(('variants', i, 'id'))}: duplicate variant id '{variant.id}' "
                f"(first at variants[{first[variant.id]}])"
            )
        first.setdefault(variant.id, i)
    return {v.id: v for v in models.variants}, problems


def _merge_providers(
    gateway: GatewayFile, gw_marks: Marks, providers: ProvidersFile, prov_marks: Marks
) -> tuple[list[_Provider], list[str]]:
    """Inline providers (gateway.yaml) first, then providers.yaml; a name may not be in both."""
    problems = [
        f"{prov_marks.at(('providers', name))}: provider '{name}' is also defined in "
        f"{gw_marks.file}; define each provider in one file"
        for name in providers.providers
        if name in gateway.providers
    ]
    inline = [_Provider(n, c, gw_marks) for n, c in gateway.providers.items()]
    return inline + [_Provider(n, c, prov_marks) for n, c in providers.providers.items()], problems


def _check_provider(src: _Provider, variants: Mapping[str, Variant]) -> list[str]:
    cfg = src.config
    problems = []
    if not _PROVIDER_NAME.match(src.name):
        problems.append(f"{src.at()}: provider names use lowercase letters, digits, '-' and '_'")
    if cfg.adapter == "openai" and not cfg.base_url:
        problems.append(f"{src.at('base_url')}: required for adapter 'openai'")
    for i, dep in enumerate(cfg.deployments):
        if dep.variant not in variants:
            unknown = _unknown_variant(dep.variant, variants)
            problems.append(f"{src.at('deployments', i, 'variant')}: {unknown}")
        if cfg.adapter == "litellm" and not dep.litellm_model:
            problems.append(
                f"{src.at('deployments', i, 'litellm_model')}: required for adapter 'litellm' "
                "(e.g. bedrock/converse/zai.glm-4.7)"
            )
    return problems + _check_surfaces(src)


def _check_surfaces(src: _Provider) -> list[str]:
    cfg = src.config
    problems = []
    served = {d.variant for d in cfg.deployments}
    for name, surface in cfg.surfaces.items():
        if name == DEFAULT_SURFACE or not _PROVIDER_NAME.match(name):
            problems.append(
                f"{src.at('surfaces', name)}: a surface name uses lowercase letters, digits, "
                f"'-' and '_', and is not '{DEFAULT_SURFACE}' (the provider's own base_url)"
            )
        if cfg.adapter == "openai" and not (surface.base_url or cfg.base_url):
            where = src.at("surfaces", name, "base_url")
            problems.append(f"{where}: required for adapter 'openai'")
        for j, vid in enumerate(surface.variants or ()):
            if vid not in served:
                problems.append(
                    f"{src.at('surfaces', name, 'variants', j)}: this provider has no deployment "
                    f"of '{vid}'; it has: {', '.join(sorted(served))}"
                )
    known = {DEFAULT_SURFACE, *cfg.surfaces}
    order = cfg.surface_order or ()
    for j, name in enumerate(order):
        if name not in known or order.index(name) != j:
            what = "is named twice" if name in known else "is not a surface of this provider"
            problems.append(
                f"{src.at('surface_order', j)}: '{name}' {what}; surfaces: {', '.join(known)}"
            )
    return problems


def _check_gateway(
    gateway: GatewayFile, marks: Marks, variants: Mapping[str, Variant], settings: Settings
) -> list[str]:
    problems = []
    for name, alias in gateway.aliases.items():
        at = marks.at(("aliases", name))
        if name in variants:
            problems.append(f"{at}: alias name collides with the variant id")
        if name in RESERVED_MODEL_NAMES:
            problems.append(f"{at}: '{name}' is reserved (it means any variant)")
        for j, vid in enumerate(alias.variants or ()):
            if vid not in variants:
                where = marks.at(("aliases", name, "variants", j))
                problems.append(f"{where}: {_unknown_variant(vid, variants)}")
    known = {*variants, *gateway.aliases, *RESERVED_MODEL_NAMES}
    written = "frontends" in gateway.model_fields_set  # the defaults name shipped aliases
    for name, model in gateway.frontends.messages.claude_models.items():
        if written and model not in known:
            where = marks.at(("frontends", "messages", "claude_models", name))
            problems.append(f"{where}: {model!r} is not a variant id, an alias or auto")
    st = gateway.state
    named = st.redis_url or st.redis_sentinels or st.redis_cluster_nodes
    if st.backend == "redis" and not named and not settings.redis_mode_set():
        problems.append(
            f"{marks.at(('state', 'redis_url'))}: required when state.backend is 'redis' "
            "(set GLM_GATEWAY_REDIS_URL, GLM_GATEWAY_REDIS_SENTINELS or "
            "GLM_GATEWAY_REDIS_CLUSTER_NODES)"
        )
    for problem in target_problems(st):
        key = problem.split(":", 1)[0].removeprefix("state.")
        problems.append(f"{marks.at(('state', key))}: {problem.split(': ', 1)[1]}")
    return problems


def _unknown_variant(vid: str, variants: Mapping[str, Variant]) -> str:
    close = difflib.get_close_matches(vid, list(variants), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown variant '{vid}'{hint}; known: {', '.join(variants)}"


# --- building -----------------------------------------------------------------------------------


def _demo_rewrite(providers: list[_Provider], url: str, warnings: list[str]) -> list[_Provider]:
    """Point every provider at the simulator; LiteLLM providers speak OpenAI to it."""
    out = []
    for src in providers:
        update: dict[str, Any] = {"base_url": f"{url}/{src.name}/v1"}
        if src.config.anthropic_base_url:
            update["anthropic_base_url"] = f"{url}/{src.name}/anthropic"
        quota = f"{url}/{src.name}{SIM_QUOTA_PATH}"
        if src.config.quota:
            update["quota"] = src.config.quota.model_copy(update={"url": quota})
        if src.config.surfaces:
            update["surfaces"] = {
                name: surface.model_copy(
                    update={
                        "base_url": f"{url}/{src.name}/{name}/v1",
                        "anthropic_base_url": f"{url}/{src.name}/{name}/anthropic"
                        if surface.anthropic_base_url
                        else None,
                        "quota": surface.quota.model_copy(update={"url": quota})
                        if surface.quota
                        else None,
                    }
                )
                for name, surface in src.config.surfaces.items()
            }
        if src.config.adapter == "litellm":
            update["adapter"] = "openai"
            warnings.append(
                f"demo: provider {src.name} ({src.config.name}) uses adapter litellm; "
                f"served as adapter openai by the simulator at {update['base_url']}"
            )
        out.append(_Provider(src.name, src.config.model_copy(update=update), src.marks))
    return out


def _build_catalogue(
    variants: dict[str, Variant],
    providers: list[_Provider],
    env: Mapping[str, str],
    demo: bool,
    warnings: list[str],
) -> Catalogue:
    found: dict[str, list[Target]] = {vid: [] for vid in variants}
    skipped: list[SkippedDeployment] = []
    for src in providers:
        for surface in _surfaces(src.config):
            cfg = surface.config
            key, reason = _api_key(cfg, env, demo)
            deps = surface.deployments
            if reason is not None:
                skipped += [SkippedDeployment(src.name, d.variant, reason) for d in deps]
                count = len(deps)
                where = "" if surface.name == DEFAULT_SURFACE else f" surface {surface.name}"
                warnings.append(
                    f"provider {src.name} ({cfg.name}){where}: {reason}; "
                    f"{count} deployment{'' if count == 1 else 's'} skipped"
                )
                continue
            for target in _provider_targets(src.name, surface, variants, key):
                found[target.variant.id].append(target)
    by_variant = {vid: tuple(ts) for vid, ts in found.items()}
    warnings += _coverage_warnings(variants, by_variant, skipped)
    return Catalogue(
        variants=variants,
        targets=tuple(t for ts in by_variant.values() for t in ts),
        by_variant=by_variant,
        providers={src.name: src.config for src in providers},
        skipped=tuple(skipped),
    )


def _api_key(
    cfg: ProviderConfig, env: Mapping[str, str], demo: bool
) -> tuple[str | None, str | None]:
    """``(key, None)`` when the provider can be used, else ``(None, why not)``."""
    if demo:
        return DEMO_API_KEY, None
    if cfg.api_key_env is None:
        return None, None
    key = env.get(cfg.api_key_env, "").strip()
    return (key, None) if key else (None, f"{cfg.api_key_env} is not set")


@dataclass(frozen=True)
class _Surface:
    name: str
    config: ProviderConfig
    """The provider's config as this surface sees it (its own URLs and key env)."""
    deployments: tuple[Deployment, ...]
    """The provider's deployments this surface serves."""


def _surfaces(cfg: ProviderConfig) -> list[_Surface]:
    """The default surface, then each named one, as a provider config of its own."""
    out = [_Surface(DEFAULT_SURFACE, cfg, tuple(cfg.deployments))]
    for name, s in cfg.surfaces.items():
        view = cfg.model_copy(
            update={
                "base_url": s.base_url or cfg.base_url,
                "anthropic_base_url": s.anthropic_base_url,
                "api_key_env": s.api_key_env or cfg.api_key_env,
            }
        )
        deps = tuple(d for d in cfg.deployments if s.variants is None or d.variant in s.variants)
        out.append(_Surface(name, view, deps))
    return out


def _provider_targets(
    provider: str, surface: _Surface, variants: Mapping[str, Variant], api_key: str | None
) -> list[Target]:
    seen: dict[str, int] = {}
    targets = []
    named = "" if surface.name == DEFAULT_SURFACE else f":{surface.name}"
    for dep in surface.deployments:
        seen[dep.variant] = seen.get(dep.variant, 0) + 1
        n = seen[dep.variant]
        target_id = f"{provider}{named}/{dep.variant}" + (f"#{n}" if n > 1 else "")
        target = _target(target_id, provider, surface.config, dep, variants[dep.variant], api_key)
        order = surface.config.surface_names
        rank = order.index(surface.name) if surface.name in order else -1
        if named or rank != 0:
            target = replace(target, surface=surface.name, surface_rank=rank)
        targets.append(target)
    return targets


def _target(
    target_id: str,
    provider: str,
    cfg: ProviderConfig,
    dep: Deployment,
    variant: Variant,
    api_key: str | None,
) -> Target:
    return Target(
        id=target_id,
        provider=provider,
        variant=variant,
        model=dep.model,
        adapter=cfg.adapter,
        dialect=cfg.dialect,
        base_url=cfg.base_url,
        api_key=api_key,
        capabilities=(variant.capabilities | dep.capabilities_add) - dep.capabilities_remove,
        context=dep.context if dep.context is not None else variant.context,
        max_output=dep.max_output if dep.max_output is not None else variant.max_output,
        price=dep.price,
        builtin_tools=frozenset(dep.builtin_tools),
        weight=dep.weight,
        priority=dep.priority,
        rpm=dep.rpm,
        tpm=dep.tpm,
        timeout=dep.timeout if dep.timeout is not None else cfg.timeout,
        litellm_model=dep.litellm_model,
        headers=tuple(cfg.headers.items()),
        litellm_params=tuple(cfg.litellm_params.items()),
        messages_url=f"{cfg.anthropic_base_url}/v1/messages" if cfg.anthropic_base_url else None,
    )


def _coverage_warnings(
    variants: Mapping[str, Variant],
    by_variant: Mapping[str, tuple[Target, ...]],
    skipped: list[SkippedDeployment],
) -> list[str]:
    lines = []
    for vid, variant in variants.items():
        if by_variant[vid]:
            continue
        blocked = sorted({s.provider for s in skipped if s.variant == vid})
        why = f"skipped: {', '.join(blocked)}" if blocked else "none configured"
        lines.append(f"variant {vid} ({variant.name}): no deployment available ({why})")
    return lines
