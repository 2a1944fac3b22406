"""gateway.routing.structured: json_schema answers validated, one miss allowed, clear errors."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.routing.failures import DECISION_TABLE, Action, FailureClass
from gateway.routing.structured import SchemaCache, SchemaGuard

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
    "additionalProperties": False,
}


def body(schema: Any = SCHEMA) -> dict[str, Any]:
    return {
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}}
    }


def guard() -> SchemaGuard:
    g = SchemaCache().guard(body())
    assert g is not None
    return g


def answer(content: Any, finish: str = "stop", **msg: Any) -> dict[str, Any]:
    return {"choices": [{"message": {"content": content, **msg}, "finish_reason": finish}]}


def test_only_json_schema_requests_are_guarded() -> None:
    cache = SchemaCache()
    assert cache.guard({}) is None
    assert cache.guard({"response_format": {"type": "json_object"}}) is None
    assert cache.guard(body()) is not None


def test_valid_answer_passes_and_a_fenced_one_is_unwrapped() -> None:
    g = guard()
    assert g.check(answer('{"city": "Oslo", "days": 2}')) is None
    fenced = answer('```json\n{"city": "Oslo", "days": 2}\n```')
    assert g.check(fenced) is None
    assert fenced["choices"][0]["message"]["content"] == '{"city": "Oslo", "days": 2}'
    assert g.misses == 0


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("Sure! The weather in Oslo is nice.", "not JSON"),
        ('{"city": "Oslo"}', "'days' is a required property"),
        ('{"city": "Oslo", "days": 0}', "$.days"),
        ('{"city": "Oslo", "days": 2, "x": 1}', "Additional properties"),
        (None, "no content"),
    ],
)
def test_misses_say_what_is_wrong(content: Any, why: str) -> None:
    g = guard()
    miss = g.check(answer(content))
    assert miss is not None and miss.cls is FailureClass.SCHEMA and why in miss.message
    assert miss.status == 200 and not g.exhausted


def test_second_miss_exhausts_and_the_error_lists_both() -> None:
    g = guard()
    assert g.check(answer("prose")) is not None
    assert g.check(answer('{"city": 1, "days": 1}')) is not None
    assert g.exhausted
    err = g.error([{"provider": "zai"}, {"provider": "openrouter"}])
    assert (err.status, err.code, err.type) == (502, "structured_output_invalid", "upstream_error")
    assert "not JSON" in err.message and "$.city" in err.message
    assert err.body()["error"]["attempts"] == [{"provider": "zai"}, {"provider": "openrouter"}]


@pytest.mark.parametrize("finish", ["length", "content_filter", "tool_calls"])
def test_answers_that_say_why_they_are_not_json_pass_unchecked(finish: str) -> None:
    assert guard().check(answer('{"city": ', finish)) is None
    assert guard().check_text('{"city": ', finish) is None


def test_tool_calls_pass_unchecked() -> None:
    assert guard().check(answer(None, tool_calls=[{"id": "t"}])) is None


def test_streamed_text_is_checked_at_the_end() -> None:
    g = guard()
    assert g.check_text('{"city": "Oslo", "days": 3}', "stop") is None
    miss = g.check_text("Oslo, 3 days", "stop")
    assert miss is not None and g.misses == 1


def test_an_invalid_schema_is_the_callers_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        SchemaCache().guard(body({"type": "objekt"}))
    assert info.value.status == 400 and info.value.param == "response_format.json_schema.schema"
    with pytest.raises(InvalidRequest):
        SchemaCache().guard(body(["not", "an", "object"]))


def test_the_cache_is_bounded_and_keyed_by_schema() -> None:
    cache = SchemaCache(max_entries=2)
    for n in range(5):
        schema = {"type": "object", "properties": {f"p{n}": {"type": "string"}}}
        assert cache.guard(body(schema)) is not None
    assert len(cache._validators) == 2
    a, b = cache.guard(body()), cache.guard(body({**SCHEMA}))
    assert a is not None and b is not None and a.validator is b.validator


def test_schema_mismatch_moves_to_the_next_candidate() -> None:
    rule = DECISION_TABLE[FailureClass.SCHEMA]
    assert rule.action is Action.NEXT and rule.cooldown_s is None and not rule.mark_key_bad
