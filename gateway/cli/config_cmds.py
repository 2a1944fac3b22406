"""``glm-gateway init DIR`` and ``glm-gateway check-config [DIR]``: the config directory."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.catalogue.catalogue import Config
from gateway.catalogue.loader import GATEWAY_FILE, MODELS_FILE, PROVIDERS_FILE, default_config_dir
from gateway.catalogue.schema import StateConfig
from gateway.errors import ConfigError
from gateway.state.redis_target import redis_target

CONFIG_FILES = (GATEWAY_FILE, MODELS_FILE, PROVIDERS_FILE)

Resolve = Callable[[str | None], Config]


def cmd_init(args: argparse.Namespace) -> int:
    """Copy the packaged config into ``args.dir`` (refuses to overwrite without --force)."""
    dest = Path(args.dir)
    source = default_config_dir()
    if dest.exists() and not dest.is_dir():
        print(f"glm-gateway init: {dest} exists and is not a directory", file=sys.stderr)
        return 1
    there = [dest / name for name in CONFIG_FILES if (dest / name).exists()]
    if there and not args.force:
        names = ", ".join(str(p) for p in there)
        print(
            f"glm-gateway init: {names} already exist{'s' if len(there) == 1 else ''}; "
            "nothing written (--force overwrites)",
            file=sys.stderr,
        )
        return 1
    dest.mkdir(parents=True, exist_ok=True)
    for name in CONFIG_FILES:
        shutil.copyfile(source / name, dest / name)
        print(f"wrote {dest / name}")
    print(
        f"Edit them, then: glm-gateway check-config {dest}  and  "
        f"glm-gateway serve --config {dest}  (or set GLM_GATEWAY_CONFIG_DIR={dest})"
    )
    return 0


def cmd_check_config(args: argparse.Namespace, resolve: Resolve) -> int:
    """Load and cross-check a config directory as ``serve`` does, start nothing; exit 1 on
    problems, each printed as ``file:line: key: what is wrong``."""
    directory = args.dir or args.config
    try:
        config = resolve(directory)
    except ConfigError as exc:
        problems = str(exc).splitlines()
        count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
        print(f"glm-gateway check-config: {count}:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    for line in summary(config):
        print(line)
    return 0


def summary(config: Config) -> list[str]:
    """What a valid config holds: variants, providers, deployments, unset keys, state, auth."""
    cat, gw = config.catalogue, config.gateway
    unset: dict[str, list[str]] = {}
    for s in cat.skipped:
        env = cat.providers[s.provider].api_key_env or "-"
        unset.setdefault(env, [])
        if s.provider not in unset[env]:
            unset[env].append(s.provider)
    deployments = len(cat.targets) + len(cat.skipped)
    served = sum(1 for vid in cat.variants if cat.by_variant.get(vid))
    master = gw.auth.master_key is not None
    lines = [
        f"config OK: {config.source_dir}",
        f"  variants: {len(cat.variants)} ({served} with a usable deployment); "
        f"aliases: {', '.join(gw.aliases) or '-'}",
        f"  providers: {len(cat.providers)}; deployments: {deployments} "
        f"({len(cat.targets)} usable, {len(cat.skipped)} skipped)",
        f"  state: {_state_line(gw.state)}; client auth: "
        + ("off" if not gw.auth.enabled else "on, master key " + ("set" if master else "not set")),
        f"  records: {_records_line(gw.database.url)}",
        "  keys not set (their deployments are skipped):" if unset else "  keys not set: none",
    ]
    lines += [f"    {env}: {', '.join(providers)}" for env, providers in unset.items()]
    return lines


def _state_line(state: StateConfig) -> str:
    """``memory``, or ``redis <mode>: <where>`` (never a password)."""
    target = redis_target(state) if state.backend == "redis" else None
    return "memory" if target is None else f"redis {target.mode}: {target.describe()}"


def _records_line(url: str | None) -> str:
    """Where virtual keys and spend are kept (a database URL without its password)."""
    if url is None:
        return "state backend (no database: keys there, no spend ledger)"
    from gateway.records.db import where  # gateway.records loads only with a database

    return f"PostgreSQL {where(url)} (keys and the spend ledger)"


def add_config_parsers(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``init`` and ``check-config`` subcommands (their ``func`` is set by the caller)."""
    i = sub.add_parser(
        "init",
        help="write an editable copy of the packaged config into DIR",
        description="Copy the packaged config (gateway.yaml, models.yaml, providers.yaml) into "
        "DIR, created if needed. Existing files are not overwritten unless --force.",
    )
    i.add_argument("dir", metavar="DIR")
    i.add_argument("--force", action="store_true", help="overwrite files that exist")
    i.set_defaults(func=cmd_init)

    c = sub.add_parser(
        "check-config",
        help="validate a config directory and exit (nothing is started)",
        description="Load and cross-check a config directory exactly as serve does, without "
        "starting anything. Prints a summary (variants, providers, deployments, unset keys) "
        "and exits 0, or prints every problem as file:line: key: what is wrong and exits 1. "
        "DIR defaults to --config, then $GLM_GATEWAY_CONFIG_DIR, then the packaged config.",
    )
    c.add_argument("dir", metavar="DIR", nargs="?", help="the config directory")
    with_config(c)
