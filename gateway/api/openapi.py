"""``GET /openapi.json``: the gateway's OpenAPI 3.1 document, every endpoint in it.

FastAPI generates the entries of its own routes; each route adds what FastAPI cannot see (the
bodies it reads from the raw request, its answers, the error shape) through ``openapi_extra``
built by :func:`operation`. ``POST /v1/chat/completions`` is not a FastAPI route (it is the raw
ASGI hot path), so its entry is written here. :class:`OpenAPIDocument` assembles the whole on
the first request and serves the same bytes afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson

from gateway.catalogue.schema import CAPABILITIES, FALLBACK_MODES, POLICIES
from gateway.tenancy.keys import KeySpec

_REF = "#/components/schemas/"
OPENAI_CHAT_DOCS = "https://platform.openai.com/docs/api-reference/chat/create"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "OpenAI's error shape; some errors add fields (attempts, unmet, rejected).",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string", "minLength": 1},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Anthropic's error shape (the Messages endpoints).",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "minLength": 1},
                "message": {"type": "string", "minLength": 1},
            },
        },
    },
}
ERROR_TEXT = {
    400: "Invalid JSON, field or X-GLM-* header (param names it), or no capable variant.",
    401: "Missing or unknown API key.",
    403: "The key may not do this (the master key only, or the key's allowed variants).",
    404: "Unknown model, key or path.",
    405: "Method not allowed on this path.",
    413: "Body larger than server.max_body_bytes.",
    422: "The config on disk does not load (error.problems names each, with file and key).",
    429: "Rate limit or budget reached; Retry-After says when to retry.",
    502: "Every candidate failed (error.attempts lists them).",
    503: "Every candidate failed on capacity, or the gateway is overloaded.",
    504: "The request's deadline passed.",
}
MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "null"},
                {"type": "array", "items": {"type": "object"}},
            ]
        },
        "tool_calls": {"type": ["array", "null"], "items": {"type": "object"}},
    },
}
ROUTE_FIELD: dict[str, Any] = {
    "type": "object",
    "description": "The X-GLM-* declarations as a body field (removed before forwarding).",
    "additionalProperties": False,
    "properties": {
        "capabilities": {"type": "array", "items": {"enum": list(CAPABILITIES)}, "minItems": 1},
        "min_context": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
        "params": {"type": "string", "pattern": r"^(<=|>=|<|>|=)?[0-9]{1,4}B$"},
        "prefer": {"enum": list(POLICIES)},
        "fallback": {"enum": list(FALLBACK_MODES)},
        "providers": {"type": "array", "minItems": 1},  # the names: complete()
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
    },
}
CHAT_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": (
        "OpenAI's CreateChatCompletionRequest (loosely: only the fields the gateway reads are "
        "described; every other field is forwarded to the host)."
    ),
    "externalDocs": {"url": OPENAI_CHAT_DOCS},
    "required": ["model", "messages"],
    "properties": {
        "model": {
            "type": "string",
            "minLength": 1,
            "description": "A variant id, 'auto' / 'glm-4', or a configured alias.",
        },  # complete() adds the ids this gateway knows
        "messages": {"type": "array", "minItems": 1, "items": {"$ref": _REF + "ChatMessage"}},
        "stream": {"type": ["boolean", "null"]},
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "tools": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": ["function", "web_search", "retrieval", "mcp", "code_interpreter"],
                    }
                },
            },
        },
        "response_format": {
            "type": ["object", "null"],
            "required": ["type"],
            "properties": {"type": {"type": "string"}},
        },
        "route": {"$ref": _REF + "RouteDeclarations"},
    },
}
_CAPS = "(" + "|".join(CAPABILITIES) + ")"
GLM_HEADER_SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "X-GLM-Capabilities": (
        "Capabilities that must all be supported, comma-separated.",
        {"type": "string", "pattern": f"^{_CAPS}(,{_CAPS})*$"},
    ),
    "X-GLM-Min-Context": (
        "Tokens the variant must accept: 150000 or 150k.",
        {"type": "string", "pattern": "^[1-9][0-9]{0,4}[kK]?$"},
    ),
    "X-GLM-Params": (
        "Parameter-size bound: <=9B, >=32B.",
        {"type": "string", "pattern": "^(<=|>=)[1-9][0-9]{0,3}B$"},
    ),
    "X-GLM-Prefer": ("Ranking policy.", {"enum": list(POLICIES)}),
    "X-GLM-Fallback": ("How far fallback may go.", {"enum": list(FALLBACK_MODES)}),
    "X-GLM-Providers": (
        "Only these providers, in this order (comma-separated).",
        {"type": "string"},
    ),
    "X-GLM-Timeout": ("Total deadline in seconds.", {"type": "string", "pattern": "^[1-9][0-9]?$"}),
}


def glm_headers(providers: list[str]) -> list[dict[str, Any]]:
    """The X-GLM-* request headers; ``providers``: the names X-GLM-Providers may use."""
    out = []
    for name, (text, schema) in GLM_HEADER_SCHEMAS.items():
        if name == "X-GLM-Providers":
            schema = {"enum": providers}
        out.append(
            {"name": name, "in": "header", "required": False, "description": text, "schema": schema}
        )
    return out


ROUTE_HEADERS = {
    name: {"description": text, "schema": {"type": "string"}}
    for name, text in (
        ("X-Request-Id", "The request's id (the client's X-Request-Id when it sent one)."),
        ("X-GLM-Variant", "The variant that answered, or none."),
        ("X-GLM-Provider", "The provider that answered, or none."),
        ("X-GLM-Attempts", "Upstream attempts made."),
    )
}
_OBJECT: dict[str, Any] = {"type": "object"}


def json_body(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    """One response (or request body) whose content is JSON of ``schema``."""
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def errors(*statuses: int, anthropic: bool = False) -> dict[str, dict[str, Any]]:
    """The error answers ``statuses``, each in OpenAI's error shape (or Anthropic's)."""
    ref = {"$ref": _REF + ("AnthropicErrorResponse" if anthropic else "ErrorResponse")}
    return {str(s): json_body(ref, ERROR_TEXT[s]) for s in statuses}


def operation(
    summary: str,
    responses: dict[str, dict[str, Any]],
    *,
    body: dict[str, Any] | None = None,
    public: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` for a FastAPI route: what FastAPI cannot see from its signature."""
    out: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if public:
        out["security"] = []
    if parameters:
        out["parameters"] = parameters
    return out


def chat_operation() -> dict[str, Any]:
    """``POST /v1/chat/completions`` (the raw handler; FastAPI never sees it)."""
    completion = {
        "type": "object",
        "required": ["id", "object", "choices"],
        "properties": {"object": {"const": "chat.completion"}},
    }
    ok = json_body(completion, "The completion; a text/event-stream when stream is true.")
    ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    ok["headers"] = ROUTE_HEADERS
    return {
        "operationId": "create_chat_completion",
        "summary": "Chat completion, routed to the best capable GLM-4 variant.",
        "externalDocs": {"url": OPENAI_CHAT_DOCS},
        "parameters": [],  # complete() adds the X-GLM-* headers
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF + "ChatCompletionRequest"}}},
        },
        "responses": {"200": ok, **errors(400, 401, 403, 404, 413, 429, 502, 503, 504)},
    }


def complete(generated: dict[str, Any], models: list[str], providers: list[str]) -> dict[str, Any]:
    """FastAPI's document plus the raw chat path, the shared schemas and bearer security.

    ``models``: what ``model`` may name here (variant ids, auto, aliases); any other string is
    answered 404. ``providers``: the provider names X-GLM-Providers may use.

    FastAPI's 422 answers are dropped: no route declares a parameter FastAPI validates beyond a
    string path segment, so the gateway never sends them.
    """
    doc = copy.deepcopy(generated)
    doc["info"]["description"] = (
        "OpenAI-compatible routing gateway for the GLM-4 model family. Errors are always "
        "OpenAI's shape, {error: {message, type, param, code}}."
    )
    paths: dict[str, Any] = doc.setdefault("paths", {})
    for item in paths.values():
        for op in item.values():
            op.get("responses", {}).pop("422", None)
    paths["/v1/chat/completions"] = {"post": chat_operation()}
    for path in ("/v1/chat/completions", "/v1/route"):
        paths[path]["post"]["parameters"] = glm_headers(providers)
    paths = {p: paths[p] for p in sorted(paths, key=lambda p: (not p.startswith("/v1"), p))}
    doc["paths"] = paths
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(
        ErrorResponse=ERROR_SCHEMA,
        AnthropicErrorResponse=ANTHROPIC_ERROR_SCHEMA,
        ChatCompletionRequest=_chat_request(models),
        ChatMessage=MESSAGE_SCHEMA,
        RouteDeclarations=_route_field(providers),
        KeySpec=KeySpec.model_json_schema(ref_template=_REF + "{model}"),
    )
    doc["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "The master key or a virtual key (any key when auth is off).",
        }
    }
    doc["security"] = [{"bearer": []}]
    return doc


def _chat_request(models: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(CHAT_REQUEST)
    out["properties"]["model"]["enum"] = models  # any other string: 404 model_not_found
    return out


def _route_field(providers: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(ROUTE_FIELD)
    out["properties"]["providers"]["items"] = {"enum": providers}
    return out


class OpenAPIDocument:
    """The document's bytes, built from ``generate()`` (FastAPI's) on first use."""

    def __init__(
        self, generate: Callable[[], dict[str, Any]], models: list[str], providers: list[str]
    ) -> None:
        self._generate = generate
        self._models = models
        self._providers = providers
        self._bytes: bytes | None = None

    def bytes(self) -> bytes:
        if self._bytes is None:
            self._bytes = orjson.dumps(complete(self._generate(), self._models, self._providers))
        return self._bytes
