"""Responses ``tools``, ``tool_choice``, ``text.format`` and ``reasoning`` → chat fields.

Namespaces (``{"type": "namespace", "name": "multi_agent_v1", "tools": [functions]}``, as
Codex sends) are flattened: each function becomes ``<namespace>__<name>`` (:data:`SEPARATOR`).
The host sees only flat names; :class:`Names` keeps the table and maps every name the host
answers with back to ``(name, namespace)``. A collision cannot pass silently: a flat name that
two tools would share (a top-level ``a__b`` and ``b`` in namespace ``a``) is a 400, and so is a
flat name longer than the 64 characters hosts accept.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from gateway.frontends.messages_fields import Ignored, array, bad, obj, string

SEPARATOR: Final = "__"
_MAX_NAME: Final = 64
WebSearch = Literal["builtin", "drop"]


class Names:
    """Flat function name (what the host sees) ↔ ``(name, namespace)``."""

    def __init__(self) -> None:
        self._back: dict[str, tuple[str, str | None]] = {}

    def add(self, name: str, namespace: str | None, path: str) -> str:
        flat = self.flat(name, namespace, path)
        if flat in self._back:
            raise bad(path, f"the function name {flat!r} is used twice.")
        self._back[flat] = (name, namespace)
        return flat

    def flat(self, name: str, namespace: str | None, path: str) -> str:
        flat = name if namespace is None else namespace + SEPARATOR + name
        if namespace is not None and len(flat) > _MAX_NAME:
            raise bad(path, f"{flat!r} (namespace{SEPARATOR}name) is over {_MAX_NAME} characters.")
        return flat

    def back(self, flat: str) -> tuple[str, str | None]:
        """``(name, namespace)`` of a host's function name (unknown names pass as sent)."""
        return self._back.get(flat, (flat, None))


def tools(
    body: dict[str, Any],
    chat: dict[str, Any],
    names: Names,
    *,
    web_search: WebSearch,
    ignored: Ignored,
) -> list[dict[str, Any]]:
    """Put ``tools`` on ``chat``; returns the client's tools as the Response echoes them."""
    value = body.get("tools")
    if value is None:
        return []
    out: list[dict[str, Any]] = []
    echo: list[dict[str, Any]] = []
    for i, tool in enumerate(array(value, "tools")):
        t = obj(tool, f"tools[{i}]")
        kind = t.get("type")
        if kind == "function":
            out.append(_function(t, None, names, f"tools[{i}]"))
            echo.append(_echo_function(out[-1], None))
        elif kind == "namespace":
            ns = string(t.get("name"), f"tools[{i}].name")
            if not ns:
                raise bad(f"tools[{i}].name", "must not be empty.")
            for j, inner in enumerate(array(t.get("tools"), f"tools[{i}].tools")):
                where = f"tools[{i}].tools[{j}]"
                out.append(_function(obj(inner, where), ns, names, where))
                echo.append(_echo_function(out[-1], names.back(out[-1]["function"]["name"])[0]))
        elif kind in ("web_search", "web_search_preview"):
            if web_search == "builtin":
                out.append({"type": "web_search"})
            else:
                ignored.field("tools.web_search=dropped")
        else:
            raise bad(f"tools[{i}].type", f"the built-in tool {kind!r} is not served here.")
    if out:
        chat["tools"] = out
    return echo


def _function(t: dict[str, Any], ns: str | None, names: Names, path: str) -> dict[str, Any]:
    if t.get("type") != "function":
        raise bad(f"{path}.type", "must be 'function'.")
    name = string(t.get("name"), f"{path}.name")
    if not name:
        raise bad(f"{path}.name", "must not be empty.")
    fn: dict[str, Any] = {"name": names.add(name, ns, f"{path}.name")}
    if t.get("description") is not None:
        fn["description"] = string(t["description"], f"{path}.description")
    params = t.get("parameters")
    fn["parameters"] = (
        {"type": "object", "properties": {}}
        if params is None
        else obj(params, f"{path}.parameters")
    )
    strict = t.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise bad(f"{path}.strict", "must be a boolean.", "invalid_type")
        fn["strict"] = strict
    return {"type": "function", "function": fn}


def _echo_function(chat_tool: dict[str, Any], plain: str | None) -> dict[str, Any]:
    fn = chat_tool["function"]
    return {
        "type": "function",
        "name": plain if plain is not None else fn["name"],
        "description": fn.get("description"),
        "parameters": fn["parameters"],
        "strict": fn.get("strict", False),
    }


def tool_choice(body: dict[str, Any], chat: dict[str, Any], names: Names) -> Any:
    """Put ``tool_choice`` and ``parallel_tool_calls`` on ``chat``; returns the choice echoed."""
    choice = body.get("tool_choice")
    if "parallel_tool_calls" in body and body["parallel_tool_calls"] is not None:
        if not isinstance(body["parallel_tool_calls"], bool):
            raise bad("parallel_tool_calls", "must be a boolean.", "invalid_type")
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if choice is None:
        return "auto"
    if choice in ("auto", "none", "required"):
        chat["tool_choice"] = choice
        return choice
    c = obj(choice, "tool_choice")
    if c.get("type") != "function":
        raise bad("tool_choice.type", "must be 'function' (or use auto, none, required).")
    name = string(c.get("name"), "tool_choice.name")
    ns = c.get("namespace")
    ns = None if ns is None else string(ns, "tool_choice.namespace")
    flat = names.flat(name, ns, "tool_choice.name")
    chat["tool_choice"] = {"type": "function", "function": {"name": flat}}
    return {"type": "function", "name": name}


def text_format(body: dict[str, Any], chat: dict[str, Any]) -> dict[str, Any]:
    """Put ``text.format`` on ``chat`` as ``response_format``; returns the format echoed."""
    text = body.get("text")
    if text is None or obj(text, "text").get("format") is None:
        return {"type": "text"}
    fmt = obj(text["format"], "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return {"type": "text"}
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return {"type": "json_object"}
    if kind != "json_schema":
        raise bad("text.format.type", "must be text, json_object or json_schema.")
    name = string(fmt.get("name"), "text.format.name")
    schema = obj(fmt.get("schema"), "text.format.schema")
    spec: dict[str, Any] = {"name": name, "schema": schema}
    if fmt.get("strict") is not None:
        if not isinstance(fmt["strict"], bool):
            raise bad("text.format.strict", "must be a boolean.", "invalid_type")
        spec["strict"] = fmt["strict"]
    if fmt.get("description") is not None:
        spec["description"] = string(fmt["description"], "text.format.description")
    chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    return {"type": "json_schema", **spec, "strict": spec.get("strict", False)}


_EFFORTS: Final = ("none", "minimal", "low", "medium", "high", "xhigh")
_SUMMARIES: Final = ("auto", "concise", "detailed")


def reasoning(body: dict[str, Any], chat: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """Put ``thinking`` on ``chat`` from ``reasoning.effort``; returns the reasoning echoed and
    whether a summary was asked."""
    value = body.get("reasoning")
    if value is None:
        return None, False
    r = obj(value, "reasoning")
    effort, summary = r.get("effort"), r.get("summary")
    if effort is not None:
        if effort not in _EFFORTS:
            raise bad("reasoning.effort", "must be one of " + ", ".join(_EFFORTS) + ".")
        chat["thinking"] = {"type": "disabled" if effort in ("none", "minimal") else "enabled"}
    if summary is not None and summary not in _SUMMARIES:
        raise bad("reasoning.summary", "must be auto, concise or detailed.")
    return {"effort": effort, "summary": summary}, summary is not None
