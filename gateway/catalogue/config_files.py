"""Reading one config file: YAML with the line of every key, ``${VAR}`` interpolation, strict
validation against a schema model.

Every problem is a :class:`~gateway.errors.ConfigError` whose lines read
``<file>:<line>: <dotted.key[index]>: <what is wrong>`` (the line of the key, or of the nearest
enclosing key that is in the file when the key itself is missing). A YAML syntax error reads
``<file>:<line>:<column>: YAML syntax error: ...``.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gateway.errors import ConfigError

Loc = tuple[int | str, ...]
"""A key path inside one file: mapping keys (str) and list indexes (int)."""
_Model = TypeVar("_Model", bound=BaseModel)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_DEPTH = 64
"""Deeper nodes get no line of their own (a recursive YAML alias would never end)."""


@dataclass(frozen=True)
class Marks:
    """Where the keys of one file are: ``file:line`` for a key path."""

    file: str
    lines: Mapping[Loc, int] = field(default_factory=dict)

    def line(self, loc: Loc) -> int | None:
        """The 1-based line of ``loc``, or of its nearest enclosing key found in the file."""
        for end in range(len(loc), -1, -1):
            n = self.lines.get(loc[:end])
            if n is not None:
                return n
        return None

    def at(self, loc: Loc) -> str:
        """``file:line: key.path`` (``file: key.path`` when the file was not read)."""
        n = self.line(loc)
        where = f"{self.file}:{n}" if n is not None else self.file
        return f"{where}: {key_path(loc)}"


def key_path(loc: Iterable[int | str]) -> str:
    """``providers.zai.deployments[0].model`` for a key path."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for i, key in enumerate(keys):
            if isinstance(key, Hashable) and key in keys[:i]:
                mark = node.value[i][0].start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        return super().construct_mapping(node, deep)


def read_file(
    path: Path, model: type[_Model], env: Mapping[str, str], demo: bool, default: Any = None
) -> tuple[_Model, Marks]:
    """Read one YAML file, interpolate it and validate it as ``model``; with its key lines.

    A missing file is ``default`` when one is given (no lines). Raises ConfigError.
    """
    file = str(path)
    if default is not None and not path.is_file():
        return model.model_validate(default), Marks(file)
    data, marks = _parse(path)
    if data is None and default is not None:
        data = default
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: (top level): expected a mapping, got {type(data).__name__}")
    data = _interpolate(data, env, demo, marks, ())
    try:
        return model.model_validate(data), marks
    except ValidationError as exc:
        lines = [_describe(marks, model, err) for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def _parse(path: Path) -> tuple[Any, Marks]:
    file = str(path)
    try:
        loader = _UniqueKeyLoader(path.read_text(encoding="utf-8"))
        try:
            node = loader.get_single_node()
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}:" if mark else " (unknown line):"
        raise ConfigError(f"{file}:{where} YAML syntax error: {exc.problem or exc}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    return data, Marks(file, _key_lines(node) if node is not None else {})


def _key_lines(root: yaml.Node) -> dict[Loc, int]:
    """The 1-based line of every key and list item under ``root``, by key path."""
    out: dict[Loc, int] = {(): root.start_mark.line + 1}
    stack: list[tuple[Loc, yaml.Node]] = [((), root)]
    while stack:
        loc, node = stack.pop()
        if len(loc) >= _MAX_DEPTH:
            continue
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    sub: Loc = (*loc, str(key.value))
                    out.setdefault(sub, key.start_mark.line + 1)
                    stack.append((sub, value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                out.setdefault((*loc, i), item.start_mark.line + 1)
                stack.append(((*loc, i), item))
    return out


def _interpolate(node: Any, env: Mapping[str, str], demo: bool, marks: Marks, loc: Loc) -> Any:
    """Replace ``${VAR}`` references in every string; an empty mapping value becomes ``None``."""
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            new = _interpolate(value, env, demo, marks, (*loc, str(key)))
            out[key] = None if new == "" else new
        return out
    if isinstance(node, list):
        return [_interpolate(v, env, demo, marks, (*loc, i)) for i, v in enumerate(node)]
    if isinstance(node, str):
        return _substitute(node, env, demo, marks, loc)
    return node


def _substitute(text: str, env: Mapping[str, str], demo: bool, marks: Marks, loc: Loc) -> str:
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
            f"{marks.at(loc)}: environment variable {name} is not set "
            f"(set it, or write ${{{name}:-default}})"
        )

    return _ENV_REF.sub(one, text)


def _describe(marks: Marks, model: type[BaseModel], err: Any) -> str:
    """One pydantic error as ``file:line: key.path: what is wrong``."""
    loc: Loc = tuple(err["loc"])
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
    return f"{marks.at(loc)}: {what}"


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys allowed at ``loc`` inside ``model`` (for "unknown key" messages)."""
    current: Any = model
    for part in loc:
        if _is_model(current) and isinstance(part, str):
            found = current.model_fields.get(part)
            current = found.annotation if found else None
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
