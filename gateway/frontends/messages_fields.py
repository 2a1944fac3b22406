"""Reading an Anthropic Messages body: typed field accessors that fail as a 400 naming the path,
and the report of what the gateway accepted but cannot honour (for ``X-GLM-Ignored``).

Every accessor raises :class:`~gateway.errors.InvalidRequest` with ``param`` set to the field's
path (``messages[2].content[0].input``); none raises anything else, whatever the JSON.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import InvalidRequest

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
_NAMED_AT_MOST = 5


def bad(path: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    """The 400 for a field: ``message`` is prefixed with the field's path."""
    return InvalidRequest(f"{path}: {message}", param=path, code=code)


def obj(value: Any, path: str) -> dict[str, Any]:
    """``value`` if it is a JSON object; raises InvalidRequest otherwise."""
    if not isinstance(value, dict):
        raise bad(path, "must be an object.", "invalid_type")
    return value


def string(value: Any, path: str) -> str:
    """``value`` if it is a string; raises InvalidRequest otherwise."""
    if not isinstance(value, str):
        raise bad(path, "must be a string.", "invalid_type")
    return value


def array(value: Any, path: str) -> list[Any]:
    """``value`` if it is a JSON array; raises InvalidRequest otherwise."""
    if not isinstance(value, list):
        raise bad(path, "must be an array.", "invalid_type")
    return value


def number(value: Any, path: str, lo: float, hi: float) -> float:
    """``value`` if it is a number (not a bool) in ``[lo, hi]``; raises InvalidRequest otherwise."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise bad(path, "must be a number.", "invalid_type")
    if not lo <= value <= hi:
        raise bad(path, f"must be between {lo:g} and {hi:g}, got {value!r}.")
    return value


def integer(value: Any, path: str, lo: int) -> int:
    """``value`` if it is an integer (not a bool) ``>= lo``; raises InvalidRequest otherwise.

    A number with a zero fraction (``1024.0``) is an integer, as JSON Schema (and so
    Anthropic's spec) has it; it comes back as an ``int``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(path, "must be an integer.", "invalid_type")
    if value < lo:
        raise bad(path, f"must be at least {lo}, got {value}.")
    return value


def text_of(blocks: Any, path: str) -> str:
    """A string, or the texts of an array of ``text`` blocks joined by a blank line
    (``cache_control`` and ``citations`` on them are accepted and dropped)."""
    if isinstance(blocks, str):
        return blocks
    texts = []
    for i, block in enumerate(array(blocks, path)):
        b = obj(block, f"{path}[{i}]")
        if b.get("type") != "text":
            raise bad(f"{path}[{i}].type", "must be 'text'.")
        texts.append(string(b.get("text"), f"{path}[{i}].text"))
    return "\n\n".join(texts)


class Ignored:
    """What the request asked for that the gateway accepted and did not do.

    Entries are ``what=how`` (``context_management=ignored``); dropped content blocks are
    counted per kind (``messages.thinking=unverified:3``) so a long session stays one short
    header. Names from the client appear only when they are plain identifiers.
    """

    def __init__(self) -> None:
        self._fields: list[str] = []
        self._blocks: dict[str, int] = {}  # a Counter costs more to make than it saves
        self._unknown: list[str] = []

    def field(self, entry: str) -> None:
        """Record ``entry`` (``name=how``) once."""
        if entry not in self._fields:
            self._fields.append(entry)

    def block(self, kind: str) -> None:
        """Count one dropped content block of ``kind`` (``thinking=unverified``)."""
        self._blocks[kind] = self._blocks.get(kind, 0) + 1

    def unknown(self, name: str) -> None:
        """Record an unknown top-level field."""
        self._unknown.append(name)

    def entries(self) -> list[str]:
        """The report, in a stable order."""
        out = list(self._fields)
        out += [f"messages.{kind}:{n}" for kind, n in self._blocks.items()]
        if self._unknown:
            shown = [k for k in sorted(self._unknown) if _NAME.fullmatch(k)][:_NAMED_AT_MOST]
            more = len(self._unknown) - len(shown)
            names = "+".join(shown) + (f"+{more}_more" if more and shown else "")
            out.append(f"unknown_fields={names or f'{more}_fields'}:ignored")
        return out
