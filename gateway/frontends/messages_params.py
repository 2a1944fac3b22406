"""Anthropic request parameters (everything but ``system`` and ``messages``) as chat fields.

Each function reads ``body``, validates what it reads, writes into ``chat`` and reports what it
accepted but cannot honour into ``ignored``:

- ``tools``: custom tools → function tools (the ``function_calling`` need); Anthropic's web
  search server tool (``web_search_*``) → the gateway's builtin ``{"type": "web_search"}`` (the
  ``tool_use`` need; its domain and location options are ignored); every other server tool →
  400 ``no_capable_variant``;
- ``tool_choice``: ``auto``/``any``/``tool``/``none`` → ``auto``/``required``/named/``none``;
  ``disable_parallel_tool_use`` → ``parallel_tool_calls: false``;
- ``temperature``, ``top_p``, ``top_k``, ``stop_sequences`` → same / ``stop``;
  ``metadata.user_id`` → ``user``;
- ``thinking`` (``enabled``/``adaptive`` → on, ``disabled`` → off) and ``output_config.effort``
  (on when ``thinking`` is absent) → the internal ``thinking: {"type"}``, which the dialect layer
  writes in each host's form; budgets, display modes and effort levels are ignored;
- ``output_config.format`` / ``output_format`` (JSON schema) → ``response_format`` json_schema.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import NoCapableVariant
from gateway.frontends.messages_fields import Ignored, array, bad, integer, number, obj, string

EFFORTS = ("low", "medium", "high", "xhigh", "max")
_WEB_SEARCH_OPTIONS = ("allowed_domains", "blocked_domains", "user_location", "max_uses")


def tools(body: dict[str, Any], chat: dict[str, Any], ignored: Ignored) -> None:
    """``tools`` → function tools and builtin web search."""
    raw = body.get("tools")
    if raw is None:
        return
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(array(raw, "tools")):
        t = obj(tool, f"tools[{i}]")
        kind = t.get("type")
        if kind is None or kind == "custom":
            out.append(_function(t, f"tools[{i}]"))
        elif not isinstance(kind, str):
            raise bad(f"tools[{i}].type", "must be a string.", "invalid_type")
        elif kind.startswith("web_search_"):
            if any(t.get(k) is not None for k in _WEB_SEARCH_OPTIONS):
                ignored.field("tools.web_search.options=ignored")
            if {"type": "web_search"} not in out:
                out.append({"type": "web_search"})
        else:
            raise NoCapableVariant(
                f"tools[{i}]: Anthropic's server tool {kind!r} has no equivalent on the GLM "
                "hosts served here; define it as a custom tool (with input_schema) instead.",
                param=f"tools[{i}].type",
            )
    if out:
        chat["tools"] = out


def _function(t: dict[str, Any], path: str) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": string(t.get("name"), f"{path}.name")}
    desc = t.get("description")
    if desc is not None:
        fn["description"] = string(desc, f"{path}.description")
    fn["parameters"] = obj(t.get("input_schema"), f"{path}.input_schema")
    strict = t.get("strict")
    if isinstance(strict, bool):
        fn["strict"] = strict
    return {"type": "function", "function": fn}


def tool_choice(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """``tool_choice`` → OpenAI's form; ``any``/``tool`` without tools is a 400."""
    raw = body.get("tool_choice")
    if raw is None:
        return
    tc = obj(raw, "tool_choice")
    kind = tc.get("type")
    names = {t["function"]["name"] for t in chat.get("tools", ()) if t["type"] == "function"}
    if kind in ("any", "tool") and "tools" not in chat:
        raise bad("tool_choice.type", f"{kind!r} needs at least one tool in 'tools'.")
    if kind == "tool":
        name = string(tc.get("name"), "tool_choice.name")
        if name not in names:
            raise bad("tool_choice.name", f"no custom tool named {name!r} in 'tools'.")
        choice: Any = {"type": "function", "function": {"name": name}}
    elif kind in ("auto", "any", "none"):
        choice = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise bad("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'.")
    if "tools" in chat:
        chat["tool_choice"] = choice
    dpt = tc.get("disable_parallel_tool_use")
    if dpt is not None and not isinstance(dpt, bool):
        raise bad("tool_choice.disable_parallel_tool_use", "must be a boolean.", "invalid_type")
    if dpt and "tools" in chat:
        chat["parallel_tool_calls"] = False


def sampling(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """``temperature``, ``top_p``, ``top_k``, ``stop_sequences``, ``metadata.user_id``."""
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = number(body[key], key, 0.0, 1.0)
    if body.get("top_k") is not None:
        chat["top_k"] = integer(body["top_k"], "top_k", 0)
    if body.get("stop_sequences") is not None:
        stops = stop_sequences(body)
        if stops:
            chat["stop"] = stops
    meta = body.get("metadata")
    if meta is not None:
        user = obj(meta, "metadata").get("user_id")
        if user is not None:
            chat["user"] = string(user, "metadata.user_id")


def stop_sequences(body: dict[str, Any]) -> list[str]:
    """``stop_sequences`` validated (an empty list when absent)."""
    raw = body.get("stop_sequences")
    if raw is None:
        return []
    return [string(s, f"stop_sequences[{i}]") for i, s in enumerate(array(raw, "stop_sequences"))]


def thinking(body: dict[str, Any], chat: dict[str, Any], ignored: Ignored) -> None:
    """``thinking`` and ``output_config`` → the internal reasoning switch and response format."""
    config = body.get("output_config")
    cfg = obj(config, "output_config") if config is not None else {}
    effort = cfg.get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise bad("output_config.effort", f"must be one of {', '.join(EFFORTS)}.")
        ignored.field("output_config.effort=ignored")
    raw = body.get("thinking")
    if raw is not None:
        th = obj(raw, "thinking")
        kind = th.get("type")
        if kind not in ("enabled", "disabled", "adaptive"):
            raise bad("thinking.type", "must be 'enabled', 'disabled' or 'adaptive'.")
        if th.get("budget_tokens") is not None:
            integer(th["budget_tokens"], "thinking.budget_tokens", 0)
            ignored.field("thinking.budget_tokens=ignored")
        if th.get("display") is not None:
            ignored.field("thinking.display=ignored")
        chat["thinking"] = {"type": "disabled" if kind == "disabled" else "enabled"}
    elif effort is not None:
        chat["thinking"] = {"type": "enabled"}
    else:  # Anthropic's default is no thinking; GLM 4.5+ thinks unless told not to
        chat["thinking"] = {"type": "disabled"}
    for path, fmt in (
        ("output_config.format", cfg.get("format")),
        ("output_format", body.get("output_format")),
    ):
        if fmt is not None:
            chat["response_format"] = _response_format(fmt, path)


def _response_format(fmt: Any, path: str) -> dict[str, Any]:
    f = obj(fmt, path)
    if f.get("type") != "json_schema":
        raise bad(f"{path}.type", "must be 'json_schema'.")
    schema = obj(f.get("schema"), f"{path}.schema")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
