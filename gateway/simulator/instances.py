"""JSON values that validate against a JSON schema, for tool arguments and structured output.

:func:`schema_instance` covers the subset of JSON Schema that tool and response schemas use:
``type`` (and type lists), ``properties``/``required``/``additionalProperties``, ``items``/
``prefixItems``/``minItems``/``maxItems``, ``enum``/``const``, ``anyOf``/``oneOf`` (first
option), ``allOf`` (merged), ``$ref`` into ``#/$defs`` or ``#/definitions``, numeric bounds and
``multipleOf``, string lengths and common ``format`` values. :func:`prompt_schema` finds a schema
a gateway injected into the prompt for hosts without native structured output.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

_SCHEMA_IN_PROMPT = re.compile(r"json schema.*?```json\s*(.+?)```", re.IGNORECASE | re.DOTALL)
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}
_MAX_DEPTH = 12


def safe_instance(schema: Any) -> Any:
    """:func:`schema_instance`, or ``{}`` when the schema is too malformed to follow."""
    try:
        return schema_instance(schema)
    except (TypeError, ValueError, AttributeError, KeyError):
        return {}


def schema_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A JSON value valid against ``schema`` (the common subset of JSON Schema, roughly)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None if schema is False else "example"
    if isinstance(schema.get("$ref"), str):
        return schema_instance(_resolve(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return schema_instance(options[0], root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                part = _resolve(root, part["$ref"]) if "$ref" in part else part
                _merge_into(merged, part)
        return schema_instance(merged, root, depth + 1)
    return _by_type(schema, root, depth)


def _by_type(schema: dict[str, Any], root: Any, depth: int) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, depth)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema)


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for raw in ref[1:].lstrip("/").split("/") if ref != "#" else ():
        key = raw.replace("~1", "/").replace("~0", "~")
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _merge_into(target: dict[str, Any], part: dict[str, Any]) -> None:
    for k, v in part.items():
        if k == "properties" and isinstance(v, dict):
            target["properties"] = {**target.get("properties", {}), **v}
        elif k == "required" and isinstance(v, list):
            target["required"] = [*target.get("required", []), *v]
        else:
            target.setdefault(k, v)


def _object(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    names = list(required) if isinstance(required, list) else list(props)
    extra = schema.get("additionalProperties")
    out: dict[str, Any] = {}
    for name in names:
        sub = props.get(name, extra if isinstance(extra, dict) else {})
        out[name] = schema_instance(sub, root, depth + 1)
    return out


def _array(schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    n = max(1, int(schema.get("minItems", 0)), len(prefix))
    if isinstance(schema.get("maxItems"), int):
        n = min(n, schema["maxItems"])
    items = schema.get("items", {})
    out = [
        schema_instance(prefix[i] if i < len(prefix) else items, root, depth + 1) for i in range(n)
    ]
    if schema.get("uniqueItems") and n > 1:
        out = [_distinct(v, i) for i, v in enumerate(out)]
    return out


def _distinct(value: Any, i: int) -> Any:
    if isinstance(value, str):
        return f"{value}{i}" if i else value
    if isinstance(value, int) and not isinstance(value, bool):
        return value + i
    return value


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    low = lo if lo is not None else xlo
    high = hi if hi is not None else xhi
    v: float = 1
    if low is not None:
        v = low if lo is not None else (math.floor(low) + 1 if integer else low + 1)
    if high is not None and (v > high or (hi is None and v >= high)):
        v = (low + high) / 2 if low is not None else (math.ceil(high) - 1 if hi is None else high)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        v = math.ceil(v / step) * step
    return math.ceil(v) if integer else v


def _string(schema: dict[str, Any]) -> str:
    s = _FORMATS.get(str(schema.get("format")), "example")
    lo, hi = schema.get("minLength"), schema.get("maxLength")
    if isinstance(lo, int) and len(s) < lo:
        s += "x" * (lo - len(s))
    if isinstance(hi, int) and len(s) > hi:
        s = s[:hi]
    return s


def prompt_schema(messages: list[Any]) -> Any:
    """A JSON schema found in a ```json block after the words "JSON schema", or ``None``."""
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if not isinstance(content, str) or "```" not in content:
            continue
        m = _SCHEMA_IN_PROMPT.search(content)
        if m is None:
            continue
        try:
            schema = orjson.loads(m.group(1))
        except orjson.JSONDecodeError:
            continue
        if (
            isinstance(schema, dict)
            and isinstance(schema.get("schema"), dict)
            and ("type" not in schema and "properties" not in schema)
        ):
            schema = schema["schema"]
        return schema
    return None
