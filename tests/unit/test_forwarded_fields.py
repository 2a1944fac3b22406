"""The upstream field allowlist (gateway/providers/dialects/fields.py)."""

from __future__ import annotations

from gateway.providers.dialects.fields import FORWARDED, OPENAI_FIELDS, forwardable
from tests.support import openapi


def test_every_openai_chat_field_is_forwarded() -> None:
    schemas = openapi.spec()["components"]["schemas"]

    def props(name: str) -> set[str]:
        node = schemas[name]
        out: set[str] = set()
        for part in node.get("allOf", [node]):
            out |= props(part["$ref"].split("/")[-1]) if "$ref" in part else set()
            out |= set(part.get("properties", {}))
        return out

    names = props("CreateChatCompletionRequest")
    assert names <= OPENAI_FIELDS <= FORWARDED, sorted(names - OPENAI_FIELDS)


def test_unknown_fields_are_dropped_and_named_safely() -> None:
    body = {"model": "m", "messages": [], "api_base": "http://x", "route": {}, "a\r\nb": 1}
    out, change = forwardable(body)
    assert out == {"model": "m", "messages": []}
    assert change == "unknown_fields=api_base+1_more:dropped"


def test_route_alone_is_not_reported() -> None:
    out, change = forwardable({"model": "m", "route": {"prefer": "cost"}})
    assert out == {"model": "m"} and change is None


def test_nothing_dropped_keeps_every_field() -> None:
    body = {"model": "m", "messages": [], "thinking": {"type": "enabled"}, "top_k": 3}
    assert forwardable(body) == (body, None)
