"""Reading deploy/compose/compose.yaml the way Docker Compose does, without an engine.

`load(env)` parses the file (YAML anchors and `<<` merges resolved by the YAML parser, as
Compose's loader does), interpolates `${...}` from ``env`` by the compose specification's rules
and keeps the services of the active profiles (`COMPOSE_PROFILES` in ``env``). `schema()` is the
compose specification's JSON schema as vendored by PyPI's check-jsonschema (pinned in
pyproject.toml), from github.com/compose-spec/compose-spec.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.procs import ROOT

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is missing: Compose refuses the file with message."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    """One string with `$$`, `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?e}`, `${VAR?e}`,
    `${VAR:+r}`, `${VAR+r}` replaced as the compose specification says."""

    def one(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        is_set, non_empty = value is not None, bool(value)
        present = non_empty if op and op.startswith(":") else is_set
        if op in (":-", "-"):
            return value if present and value is not None else interpolate_text(arg, env)
        if op in (":?", "?"):
            if not present:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value or ""
        if op in (":+", "+"):
            return interpolate_text(arg, env) if present else ""
        return value or ""

    return VAR.sub(one, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Every string in a parsed compose document interpolated (keys are left alone)."""
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    return node


def raw() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def load(env: Mapping[str, str]) -> dict[str, Any]:
    """The compose model for ``env``: interpolated, only the services of active profiles."""
    doc = interpolate(raw(), env)
    active = {p for p in env.get("COMPOSE_PROFILES", "").split(",") if p}
    doc["services"] = {
        name: svc
        for name, svc in doc["services"].items()
        if not svc.get("profiles") or active & set(svc["profiles"])
    }
    return doc  # type: ignore[no-any-return]


def schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    loaded: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return loaded


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of each bind mount (a source starting with . or /)."""
    out = []
    for vol in service.get("volumes", []):
        source, target = (
            vol.split(":")[:2] if isinstance(vol, str) else (vol["source"], vol["target"])
        )
        if source.startswith((".", "/")):
            out.append(((COMPOSE_DIR / source).resolve(), target))
    return out


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name V` or `--name=V` in a command list."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None
