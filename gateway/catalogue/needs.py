"""What a request needs: declared (X-GLM-* headers, body ``route``) plus inferred (the body).

:func:`resolve_needs` reads only the fields routing uses and never copies the body. Every
malformed declaration is an :class:`~gateway.errors.InvalidRequest` naming the header or field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from gateway.catalogue.body import IMAGE_PART_TYPES, ImageTally, check_counts, check_parts
from gateway.catalogue.catalogue import Config
from gateway.catalogue.schema import CAPABILITIES, FALLBACK_MODES, POLICIES, RequestLimits
from gateway.catalogue.tokens import MEDIA_KEYS, PromptTokens, joined_prompt
from gateway.errors import InvalidRequest, NotFound

AUTO_MODELS = frozenset({"auto", "glm-4"})
BUILTIN_TOOL_CAPABILITY = {
    "web_search": "tool_use",
    "retrieval": "tool_use",
    "mcp": "tool_use",
    "code_interpreter": "code_execution",
}
__all__ = ["IMAGE_PART_TYPES", "Needs", "infer", "resolve_needs"]
_DEFAULT_LIMITS = RequestLimits()
HEADER_KEYS = {
    "x-glm-capabilities": "capabilities",
    "x-glm-min-context": "min_context",
    "x-glm-params": "params",
    "x-glm-prefer": "prefer",
    "x-glm-fallback": "fallback",
    "x-glm-providers": "providers",
    "x-glm-timeout": "timeout",
}
_HEADER_NAMES: Final = frozenset(HEADER_KEYS)
_FIELD_HEADER = {v: "X-GLM-" + k[6:].title().replace("Glm", "GLM") for k, v in HEADER_KEYS.items()}
_CONTEXT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")
_PARAMS_RE = re.compile(r"^\s*(<=|>=|<|>|=)?\s*(\d+(?:\.\d+)?)\s*[bB]?\s*$")


@dataclass(frozen=True, slots=True)
class Declared:
    """The declared part of the needs, from headers and the body ``route`` field."""

    capabilities: frozenset[str] = frozenset()
    min_context: int | None = None
    params: tuple[tuple[str, float], ...] = ()
    policy: str | None = None
    fallback: str | None = None
    providers: tuple[str, ...] | None = None
    timeout: float | None = None


@dataclass(slots=True)
class Needs:
    """Everything routing needs to know about one request."""

    capabilities: dict[str, str]
    """capability -> "declared", "inferred" or "declared+inferred"."""
    builtin_tools: frozenset[str]
    min_context: int | None
    output_tokens: int
    output_declared: bool
    prompt: PromptTokens
    params: tuple[tuple[str, float], ...]
    policy: str
    fallback: str
    providers: tuple[str, ...] | None
    timeout: float | None
    images: bool
    pinned: str | None = None
    """The variant the client named, or None for auto / an alias."""
    alias: str | None = None
    allowed_variants: frozenset[str] | None = None
    forced_tool_choice: bool = False
    """``tool_choice`` is ``required`` or names a function: hosts that can force a tool call
    rank first (the others would be sent ``auto``, reported in ``X-GLM-Adapted``)."""
    content_parts: bool = True
    """Some message's content is a list of parts (False only when the walk saw none): without
    any, adapting the body skips its scan for image parts (True: unknown, scan)."""
    surfaces: tuple[str, ...] | None = None
    """The provider surfaces a virtual key may use, in its order (None: each provider's
    ``surface_order``)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def context_need(self) -> int:
        """Best current figure for the context need (for explanation and limits)."""
        return max(self.min_context or 0, self.prompt.best + self.output_tokens)

    def fits(self, window: int) -> bool:
        """Does the request fit a window of ``window`` tokens? Tokenizes only near the edge."""
        if self.min_context is not None and self.min_context > window:
            return False
        room = window - self.output_tokens
        return room > 0 and self.prompt.at_most(room)


def _bad(where: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid {where}: {message}", param=where, code="invalid_route_value")


def _split(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",")]
    elif isinstance(value, list) and all(isinstance(p, str) for p in value):
        items = [p.strip() for p in value]
    else:
        raise _bad(where, "expected a comma-separated string or a list of strings")
    items = [p for p in items if p]
    if not items:
        raise _bad(where, "empty list")
    return items


def parse_capabilities(value: Any, where: str) -> frozenset[str]:
    items = [p.lower() for p in _split(value, where)]
    unknown = [p for p in items if p not in CAPABILITIES]
    if unknown:
        raise _bad(where, f"unknown capability {unknown[0]!r}; known: {', '.join(CAPABILITIES)}")
    return frozenset(items)


def parse_context(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        n: float = value
    else:
        m = _CONTEXT_RE.match(value) if isinstance(value, str) else None
        if not m:
            raise _bad(where, f"{value!r} is not a token count like 150000 or 150k")
        n = float(m.group(1)) * {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()]
    if n <= 0 or n > 100_000_000:
        raise _bad(where, f"{value!r} is out of range")
    return math.ceil(n)


def parse_params(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    bounds = []
    for part in _split(value, where):
        m = _PARAMS_RE.match(part)
        if not m:
            raise _bad(where, f"{part!r} is not a bound like <=9B or >=32B")
        bounds.append((m.group(1) or "=", float(m.group(2))))
    return tuple(bounds)


def parse_choice(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise _bad(where, f"{value!r} is not one of {', '.join(allowed)}")
    return value.strip().lower()


def parse_timeout(value: Any, where: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise _bad(where, f"{value!r} is not a number of seconds") from None
    if not (0 < t <= 3600) or math.isnan(t):
        raise _bad(where, f"{value!r} must be between 0 and 3600 seconds")
    return t


def parse_declared(
    headers: Mapping[str, str], route: Any, providers_known: frozenset[str]
) -> Declared:
    """Merge declarations from headers (lower-case names) and the body ``route`` object.

    A header and the same key in ``route`` are both applied: capabilities are united, and for
    single values the header wins.
    """
    if route is None and HEADER_KEYS.keys().isdisjoint(headers):
        return _NOTHING_DECLARED
    raw: dict[str, tuple[Any, str]] = {}
    if route is not None:
        if not isinstance(route, dict):
            raise _bad("route", "expected an object")
        for key, val in route.items():
            if key not in _FIELD_HEADER:
                raise _bad("route", f"unknown key {key!r}; known: {', '.join(_FIELD_HEADER)}")
            raw[key] = (val, f"route.{key}")
    caps: frozenset[str] = frozenset()
    if "capabilities" in raw:
        caps = parse_capabilities(*raw["capabilities"])
    for hname, key in HEADER_KEYS.items():
        if hname in headers:
            if key == "capabilities":
                caps |= parse_capabilities(headers[hname], _FIELD_HEADER[key])
            else:
                raw[key] = (headers[hname], _FIELD_HEADER[key])
    return Declared(
        capabilities=caps,
        min_context=parse_context(*raw["min_context"]) if "min_context" in raw else None,
        params=parse_params(*raw["params"]) if "params" in raw else (),
        policy=parse_choice(*raw["prefer"], POLICIES) if "prefer" in raw else None,
        fallback=parse_choice(*raw["fallback"], FALLBACK_MODES) if "fallback" in raw else None,
        providers=_parse_providers(raw, providers_known),
        timeout=parse_timeout(*raw["timeout"]) if "timeout" in raw else None,
    )


_NOTHING_DECLARED: Final = Declared()


def _parse_providers(
    raw: dict[str, tuple[Any, str]], known: frozenset[str]
) -> tuple[str, ...] | None:
    if "providers" not in raw:
        return None
    value, where = raw["providers"]
    items = [p.lower() for p in _split(value, where)]
    unknown = [p for p in items if p not in known]
    if unknown:
        raise _bad(where, f"unknown provider {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return tuple(dict.fromkeys(items))


_NO_CAPS: Final[frozenset[str]] = frozenset()


class Inferred(NamedTuple):
    # A NamedTuple, not a frozen dataclass: built once per request (a third of the cost).
    capabilities: frozenset[str]
    builtin_tools: frozenset[str]
    images: bool
    output_tokens: int | None


def _check_messages(
    messages: Any, limits: RequestLimits, texts: list[str]
) -> tuple[bool, bool, list[Any]]:
    """Validate the message list's shape and image limits: whether any message carries an
    image, and whether any has content parts (a list). The same walk gathers the prompt's texts
    (:func:`~.tokens.flat_texts`'s part of it): each flat message's strings appended to
    ``texts``; returned, what is left to collect."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "'messages' must be a non-empty array of message objects.",
            param="messages",
            code="invalid_value",
        )
    images = False
    tally: ImageTally | None = None  # made when a message has content parts
    deeper: list[Any] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise InvalidRequest(
                f"messages[{i}] must be an object with a string 'role'.",
                param=f"messages[{i}]",
                code="invalid_value",
            )
        content = msg.get("content")
        if isinstance(content, str):
            if len(msg) == 2:  # the usual message: {role, content}, two strings
                texts += msg.values()
                continue
        elif content is None:
            pass
        elif isinstance(content, list):
            if tally is None:
                tally = ImageTally(limits)
            if check_parts(content, i, tally):
                images = True
        else:
            raise InvalidRequest(
                f"messages[{i}].content must be a string or an array of content parts.",
                param=f"messages[{i}].content",
                code="invalid_type",
            )
        if "tool_calls" in msg:
            _check_tool_calls(msg["tool_calls"], i)
        if MEDIA_KEYS.isdisjoint(msg):
            for value in msg.values():
                if isinstance(value, str):
                    texts.append(value)
                else:
                    deeper.append(value)
        else:
            deeper.append(msg)
    return images, tally is not None, deeper


def _check_tool_calls(calls: Any, i: int) -> None:
    """An assistant turn's ``tool_calls``: null or an array of objects (as every host wants)."""
    if calls is None or (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
        return
    raise InvalidRequest(
        f"messages[{i}].tool_calls must be an array of tool call objects.",
        param=f"messages[{i}].tool_calls",
        code="invalid_type",
    )


def _tool_needs(tools: Any, functions: Any) -> tuple[set[str], set[str]]:
    caps: set[str] = set()
    builtin: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be an array.", param="tools", code="invalid_type")
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if not isinstance(kind, str):
                raise InvalidRequest(
                    f"tools[{i}] must be an object with a string 'type'.",
                    param=f"tools[{i}]",
                    code="invalid_value",
                )
            if kind == "function":
                caps.add("function_calling")
            elif kind in BUILTIN_TOOL_CAPABILITY:
                caps.add(BUILTIN_TOOL_CAPABILITY[kind])
                builtin.add(kind)
            else:
                raise InvalidRequest(
                    f"tools[{i}].type {kind!r} is not supported; use function, "
                    + ", ".join(BUILTIN_TOOL_CAPABILITY),
                    param=f"tools[{i}].type",
                    code="invalid_value",
                )
    if functions is not None and not isinstance(functions, list):
        raise InvalidRequest(
            "'functions' must be an array.", param="functions", code="invalid_type"
        )
    if functions:
        caps.add("function_calling")
    return caps, builtin


def _output_tokens(body: Mapping[str, Any]) -> int | None:
    key, val = "max_completion_tokens", body.get("max_completion_tokens")
    if val is None:
        key, val = "max_tokens", body.get("max_tokens")
        if val is None:
            return None
    if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
        raise InvalidRequest(
            f"'{key}' must be a positive integer, got {val!r}.", param=key, code="invalid_value"
        )
    return val


def infer(body: Mapping[str, Any], limits: RequestLimits = _DEFAULT_LIMITS) -> Inferred:
    """Infer needs from the body, validating the fields it reads and the request limits."""
    images, _, _ = _check_messages(body.get("messages"), limits, [])
    tools, functions = body.get("tools"), body.get("functions")
    caps, builtin = _capabilities(tools, functions, body.get("response_format"), images)
    return Inferred(caps, builtin, images, _output_tokens(body))


def _capabilities(
    tools: Any, functions: Any, rf: Any, images: bool
) -> tuple[frozenset[str], frozenset[str]]:
    """The capabilities and built-in tools that ``tools``, ``functions``, the images and the
    ``response_format`` (``rf``) need."""
    if tools is None and functions is None and rf is None and not images:  # the usual case
        return _NO_CAPS, _NO_CAPS
    caps, builtin = _tool_needs(tools, functions)
    if images:
        caps.add("vision")
    if rf is not None:
        if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
            raise InvalidRequest(
                "'response_format' must be an object with a 'type'.",
                param="response_format",
                code="invalid_value",
            )
        if rf["type"] == "json_schema":
            schema = rf.get("json_schema")
            if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
                raise InvalidRequest(
                    "'response_format.json_schema' must be an object with a 'name'.",
                    param="response_format.json_schema",
                    code="invalid_value",
                )
            caps.add("structured_outputs")
    return frozenset(caps), frozenset(builtin)


def merge_sources(declared: frozenset[str], inferred: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    if not declared and not inferred:
        return out
    for cap in CAPABILITIES:
        if cap in declared and cap in inferred:
            out[cap] = "declared+inferred"
        elif cap in declared:
            out[cap] = "declared"
        elif cap in inferred:
            out[cap] = "inferred"
    return out


_PLAIN_BLOCKERS: Final = frozenset(
    {"route", "tools", "functions", "response_format", "max_completion_tokens", "tool_choice"}
)
"""Body fields the plain path leaves to the general one (with none of them, and no X-GLM-*
header, nothing is declared and nothing but ``max_tokens`` is inferred)."""
_new: Final = object.__new__


def resolve_needs(body: Mapping[str, Any], headers: Mapping[str, str], config: Config) -> Needs:
    """Build the full needs of one request; raises InvalidRequest / NotFound.

    The usual request (:func:`_plain_needs`) is resolved in one cheap pass; anything else, and
    anything that pass does not like, by the general path (which raises what is wrong).
    """
    if not _HEADER_NAMES.isdisjoint(headers):
        return _resolve(body, headers, config, True)
    if _PLAIN_BLOCKERS.isdisjoint(body):
        needs = _plain_needs(body, config)
        if needs is not None:
            return needs
    return _resolve(body, headers, config, False)


def _plain_needs(body: Mapping[str, Any], config: Config) -> Needs | None:
    """The needs of a body with no :data:`_PLAIN_BLOCKERS` field and nothing declared, whose
    model is a variant or auto (no alias), whose messages are all ``{role, content}`` with two
    strings and whose ``max_tokens`` is absent or a positive int; None for any other body.

    What :func:`_resolve` makes of such a body, with a fraction of its calls and tests (the
    join of the texts, needed for the prompt's size anyway, is what checks they are strings).
    """
    d = config.defaults
    model = body.get("model")
    messages = body.get("messages")
    if (
        type(model) is not str
        or type(messages) is not list
        or not messages
        or len(messages) > d.max_messages
        or model in d.aliases
    ):
        return None
    if model in d.variants:
        pinned: str | None = model
        fallback = "providers"
    elif model in AUTO_MODELS:
        pinned, fallback = None, d.default_fallback
    else:
        return None
    output = body.get("max_tokens")
    if output is not None and (type(output) is not int or output <= 0):
        return None
    texts: list[Any] = []
    for msg in messages:  # (one walk: checks and gathers; a comprehension is a call of its own)
        if type(msg) is not dict or len(msg) != 2 or "content" not in msg or "role" not in msg:
            return None
        texts += msg.values()
    try:
        joined = "".join(texts)
    except TypeError:  # a role or content that is not a string
        return None
    # Built slot by slot: a dataclass call costs ~1.8k instructions more (the type call and
    # keyword-capable __init__). tests/unit/test_needs.py checks every field is set.
    needs: Needs = _new(Needs)
    needs.capabilities = {}
    needs.builtin_tools = _NO_CAPS
    needs.min_context = None
    needs.output_tokens = output or d.output_reserve
    needs.output_declared = output is not None
    needs.prompt = joined_prompt(texts, joined, len(messages), config.tokens)
    needs.params = ()
    needs.policy = d.default_policy
    needs.fallback = fallback
    needs.providers = None
    needs.timeout = None
    needs.images = False
    needs.pinned = pinned
    needs.alias = None
    needs.allowed_variants = None
    needs.forced_tool_choice = False
    needs.content_parts = False
    needs.surfaces = None
    needs.extra = {}
    return needs


def _resolve(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    config: Config,
    glm_headers: bool | None = None,
) -> Needs:
    """:func:`resolve_needs` for any body (``glm_headers``: whether the headers hold an
    X-GLM-* one, when the caller looked)."""
    cat = config.catalogue
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "'model' is required: a variant id, 'auto', or a configured alias.",
            param="model",
            code="invalid_value",
        )
    route = body.get("route")
    if glm_headers is None:
        glm_headers = not _HEADER_NAMES.isdisjoint(headers)
    if route is None and not glm_headers:  # the usual request: no call
        declared = _NOTHING_DECLARED
    else:
        declared = parse_declared(headers, route, cat.provider_names)
    limits = config.gateway.limits
    messages: Any = body.get("messages")
    tools, functions = body.get("tools"), body.get("functions")
    check_counts(messages, tools, functions, limits)
    texts: list[str] = []  # the prompt's, gathered by the one walk over the messages
    images, parts, deeper = _check_messages(messages, limits, texts)
    inferred_caps, builtin = _capabilities(tools, functions, body.get("response_format"), images)
    output = _output_tokens(body)
    pinned: str | None = None
    alias = config.gateway.aliases.get(model)
    if model in cat.variants:
        pinned = model
    elif alias is None and model not in AUTO_MODELS:
        raise NotFound(
            f"The model {model!r} does not exist. Use 'auto', one of the GLM-4 variant ids "
            f"({', '.join(cat.variants)}), or an alias ({', '.join(config.gateway.aliases)}).",
            param="model",
            code="model_not_found",
        )
    routing = config.gateway.routing
    if alias is None:  # the usual case: the declarations alone
        caps, min_ctx, params = declared.capabilities, declared.min_context, declared.params
        policy = declared.policy or routing.default_policy
        fallback = declared.fallback
        allowed = None
    else:
        caps = declared.capabilities | alias.capabilities
        min_ctx = max(declared.min_context or 0, alias.min_context or 0) or None
        params = declared.params or (
            parse_params(alias.params, f"aliases.{model}.params") if alias.params else ()
        )
        policy = declared.policy or alias.policy or routing.default_policy
        fallback = declared.fallback or alias.fallback
        allowed = frozenset(alias.variants) if alias.variants else None
    if fallback is None:
        fallback = "providers" if pinned else routing.default_fallback
    tool_choice = body.get("tool_choice")
    # Positional: a dataclass __init__ matches keywords one by one (~0.8 µs for these).
    return Needs(
        merge_sources(caps, inferred_caps) if caps or inferred_caps else {},  # capabilities
        builtin,  # builtin_tools
        min_ctx,  # min_context
        output or routing.default_output_reserve,  # output_tokens
        output is not None,  # output_declared
        PromptTokens.of_walked(
            texts, deeper, len(messages), tools or functions, config.tokens
        ),  # prompt
        params,  # params
        policy,  # policy
        fallback,  # fallback
        declared.providers,  # providers
        declared.timeout,  # timeout
        images,  # images
        pinned,  # pinned
        model if alias is not None else None,  # alias
        allowed,  # allowed_variants
        tool_choice == "required" or isinstance(tool_choice, dict),  # forced_tool_choice
        parts,  # content_parts
    )


def forces_tool_call(tool_choice: Any) -> bool:
    """``"required"`` or a named function (``{"type": "function", ...}``)."""
    return tool_choice == "required" or isinstance(tool_choice, dict)
