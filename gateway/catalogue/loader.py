"""Load a config directory into a frozen :class:`~gateway.catalogue.catalogue.Config`.

Steps, once at start: read ``gateway.yaml`` (optional), ``models.yaml`` (required) and
``providers.yaml`` (optional); replace ``${VAR}`` / ``${VAR:-default}`` in every string value;
validate strictly with the models of :mod:`gateway.catalogue.schema`; cross-check; drop the
deployments whose API key is not set (with a warning); build the targets.

Every problem is a :class:`~gateway.errors.ConfigError` whose lines read
``<file>: <dotted.key[index]>: <what is wrong>``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gateway.catalogue.catalogue import Catalogue, Config, SkippedDeployment
from gateway.catalogue.schema import (
    Deployment,
    GatewayFile,
    ModelsFile,
    ProviderConfig,
    ProvidersFile,
    Variant,
)
from gateway.catalogue.target import Target
from gateway.errors import ConfigError

GATEWAY_FILE = "gateway.yaml"
MODELS_FILE = "models.yaml"
PROVIDERS_FILE = "providers.yaml"
RESERVED_MODEL_NAMES = frozenset({"auto", "glm-4"})
"""``model`` values that mean "choose among all variants"; no alias may take them."""
DEMO_API_KEY = "demo"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_Model = TypeVar("_Model", bound=BaseModel)
_Loc = tuple[int | str, ...]


def default_config_dir() -> Path:
    """The repository's ``config/`` directory (next to the ``gateway`` package).

    No copy is shipped inside the package: an installed wheel must be given ``--config``.
    """
    return Path(__file__).resolve().parents[2] / "config"


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
            disagree with each other. The message names the file and the key.
    """
    root = Path(config_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: config directory not found")
    env: Mapping[str, str] = os.environ if environ is None else environ
    demo = demo_simulator_url is not None
    gw_path, prov_path, models_path = root / GATEWAY_FILE, root / PROVIDERS_FILE, root / MODELS_FILE
    if not models_path.is_file():
        raise ConfigError(f"{models_path}: file not found (the catalogue of variants is required)")
    gateway = _load_file(gw_path, GatewayFile, env, demo, default={})
    models = _load_file(models_path, ModelsFile, env, demo)
    prov_file = _load_file(prov_path, ProvidersFile, env, demo, default={"providers": {}})

    variants = _check_variants(models, str(models_path))
    providers = _merge_providers(gateway, str(gw_path), prov_file, str(prov_path))
    problems = [p for src in providers for p in _check_provider(src, variants)]
    problems += _check_gateway(gateway, str(gw_path), variants)
    if problems:
        raise ConfigError("\n".join(problems))

    warnings: list[str] = []
    if demo_simulator_url is not None:
        providers = _demo_rewrite(providers, demo_simulator_url.rstrip("/"), warnings)
    catalogue = _build_catalogue(variants, providers, env, demo, warnings)
    return Config(
        gateway=gateway, catalogue=catalogue, source_dir=str(root), warnings=tuple(warnings)
    )


# --- reading ------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for i, key in enumerate(keys):
            if isinstance(key, Hashable) and key in keys[:i]:
                mark = node.value[i][0].start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        return super().construct_mapping(node, deep)


def _load_file(
    path: Path, model: type[_Model], env: Mapping[str, str], demo: bool, default: Any = None
) -> _Model:
    """Read one YAML file, interpolate it and validate it as ``model``."""
    file = str(path)
    if default is not None and not path.is_file():
        return model.model_validate(default)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown line)"
        raise ConfigError(f"{file}: {where}: YAML syntax error: {exc.problem or exc}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    if data is None and default is not None:
        data = default
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: (top level): expected a mapping, got {type(data).__name__}")
    data = _interpolate(data, env, demo, file, ())
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(file, model, err) for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def _interpolate(node: Any, env: Mapping[str, str], demo: bool, file: str, loc: _Loc) -> Any:
    """Replace ``${VAR}`` references in every string; an empty mapping value becomes ``None``."""
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            new = _interpolate(value, env, demo, file, (*loc, str(key)))
            out[key] = None if new == "" else new
        return out
    if isinstance(node, list):
        return [_interpolate(v, env, demo, file, (*loc, i)) for i, v in enumerate(node)]
    if isinstance(node, str):
        return _substitute(node, env, demo, file, loc)
    return node


def _substitute(text: str, env: Mapping[str, str], demo: bool, file: str, loc: _Loc) -> str:
    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if default is not None:
            return value if value else default
        if value is not None:
            return value
        if demo:
            return ""
        raise ConfigError(
            f"{file}: {_key_path(loc)}: environment variable {name} is not set "
            f"(set it, or write ${{{name}:-default}})"
        )

    return _ENV_REF.sub(one, text)


def _key_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(file: str, model: type[BaseModel], err: Any) -> str:
    """One pydantic error as ``file: key.path: what is wrong``."""
    loc: _Loc = tuple(err["loc"])
    kind, given = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        what = f"unknown key '{loc[-1]}' ({hint}allowed: {', '.join(allowed)})"
    elif kind == "missing":
        what = "missing required key"
    elif kind == "literal_error":
        what = f"{given!r} is not allowed; expected one of {err['ctx']['expected']}"
    elif isinstance(given, dict | list):
        what = err["msg"]
    else:
        what = f"{err['msg']} (got {given!r})"
    return f"{file}: {_key_path(loc)}: {what}"


def _fields_at(model: type[BaseModel], loc: _Loc) -> list[str]:
    """The keys allowed at ``loc`` inside ``model`` (for "unknown key" messages)."""
    current: Any = model
    for part in loc:
        if _is_model(current) and isinstance(part, str):
            field = current.model_fields.get(part)
            current = field.annotation if field else None
        elif typing.get_origin(current) in (list, tuple, dict):
            current = typing.get_args(current)[-1]
        else:
            return []
        current = _strip_optional(current)
    return list(current.model_fields) if _is_model(current) else []


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` to ``X`` when ``X`` is a model; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _is_model(a)]
        return models[0] if models else annotation
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


# --- cross-checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Provider:
    name: str
    config: ProviderConfig
    file: str


def _check_variants(models: ModelsFile, file: str) -> dict[str, Variant]:
    if not models.variants:
        raise ConfigError(f"{file}: variants: at least one variant is required")
    first: dict[str, int] = {}
    for i, variant in enumerate(models.variants):
        if variant.id in first:
            raise ConfigError(
                f"{file}: variants[{i}].id: duplicate variant id '{variant.id}' "
                f"(first at variants[{first[variant.id]}])"
            )
        first[variant.id] = i
    return {v.id: v for v in models.variants}


def _merge_providers(
    gateway: GatewayFile, gw_file: str, providers: ProvidersFile, prov_file: str
) -> list[_Provider]:
    """Inline providers (gateway.yaml) first, then providers.yaml; a name may not be in both."""
    for name in providers.providers:
        if name in gateway.providers:
            raise ConfigError(
                f"{prov_file}: providers.{name}: provider '{name}' is also defined in {gw_file}; "
                "define each provider in one file"
            )
    inline = [_Provider(n, c, gw_file) for n, c in gateway.providers.items()]
    return inline + [_Provider(n, c, prov_file) for n, c in providers.providers.items()]


def _check_provider(src: _Provider, variants: Mapping[str, Variant]) -> list[str]:
    at, cfg = f"{src.file}: providers.{src.name}", src.config
    problems = []
    if not _PROVIDER_NAME.match(src.name):
        problems.append(f"{at}: provider names use lowercase letters, digits, '-' and '_'")
    if cfg.adapter == "openai" and not cfg.base_url:
        problems.append(f"{at}.base_url: required for adapter 'openai'")
    for i, dep in enumerate(cfg.deployments):
        if dep.variant not in variants:
            unknown = _unknown_variant(dep.variant, variants)
            problems.append(f"{at}.deployments[{i}].variant: {unknown}")
        if cfg.adapter == "litellm" and not dep.litellm_model:
            problems.append(
                f"{at}.deployments[{i}].litellm_model: required for adapter 'litellm' "
                "(e.g. bedrock/converse/zai.glm-4.7)"
            )
    return problems


def _check_gateway(gateway: GatewayFile, file: str, variants: Mapping[str, Variant]) -> list[str]:
    problems = []
    for name, alias in gateway.aliases.items():
        if name in variants:
            problems.append(f"{file}: aliases.{name}: alias name collides with the variant id")
        if name in RESERVED_MODEL_NAMES:
            problems.append(f"{file}: aliases.{name}: '{name}' is reserved (it means any variant)")
        for j, vid in enumerate(alias.variants or ()):
            if vid not in variants:
                problems.append(
                    f"{file}: aliases.{name}.variants[{j}]: {_unknown_variant(vid, variants)}"
                )
    known = {*variants, *gateway.aliases, *RESERVED_MODEL_NAMES}
    written = "frontends" in gateway.model_fields_set  # the defaults name shipped aliases
    for name, model in gateway.frontends.messages.claude_models.items():
        if written and model not in known:
            problems.append(
                f"{file}: frontends.messages.claude_models.{name}: {model!r} is not a variant "
                "id, an alias or auto"
            )
    if gateway.state.backend == "redis" and not gateway.state.redis_url:
        problems.append(
            f"{file}: state.redis_url: required when state.backend is 'redis' "
            "(set GLM_GATEWAY_REDIS_URL)"
        )
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
        if src.config.adapter == "litellm":
            update["adapter"] = "openai"
            warnings.append(
                f"demo: provider {src.name} ({src.config.name}) uses adapter litellm; "
                f"served as adapter openai by the simulator at {update['base_url']}"
            )
        out.append(_Provider(src.name, src.config.model_copy(update=update), src.file))
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
        cfg = src.config
        key, reason = _api_key(cfg, env, demo)
        if reason is not None:
            skipped += [SkippedDeployment(src.name, d.variant, reason) for d in cfg.deployments]
            count = len(cfg.deployments)
            warnings.append(
                f"provider {src.name} ({cfg.name}): {reason}; "
                f"{count} deployment{'' if count == 1 else 's'} skipped"
            )
            continue
        for target in _provider_targets(src.name, cfg, variants, key):
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


def _provider_targets(
    provider: str, cfg: ProviderConfig, variants: Mapping[str, Variant], api_key: str | None
) -> list[Target]:
    seen: dict[str, int] = {}
    targets = []
    for dep in cfg.deployments:
        seen[dep.variant] = seen.get(dep.variant, 0) + 1
        n = seen[dep.variant]
        target_id = f"{provider}/{dep.variant}" + (f"#{n}" if n > 1 else "")
        targets.append(_target(target_id, provider, cfg, dep, variants[dep.variant], api_key))
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
