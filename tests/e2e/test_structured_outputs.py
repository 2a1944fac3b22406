"""Structured outputs that hold: ``json_schema`` answers validate, whatever the host.

Hosts without native ``json_schema`` (Z.ai, BigModel) get ``json_object`` plus the schema in a
prompt; the gateway validates every json_schema answer, retries once on the next candidate on a
miss, and otherwise answers 502 ``structured_output_invalid`` — never free text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest
import pytest_asyncio
from pydantic import BaseModel

from tests.support.e2e import AUTH, chat_body, directive, nonce, parse_sse, sim_requests, text_msg
from tests.support.procs import Proc

CHAT = "/v1/chat/completions"


class Forecast(BaseModel):
    city: str
    days: int
    conditions: list[str]
    warning: str | None


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
RF = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": SCHEMA, "strict": True}}
ZHIPU_FIRST = {"x-glm-providers": "zai,bigmodel,deepinfra", "x-glm-fallback": "providers"}


@pytest_asyncio.fixture
async def http(gateway: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=60) as c:
        yield c


def says(text: str) -> Any:
    """One user message, typed loosely for the SDK's TypedDict parameters."""
    return text_msg(text)


def miss(tag: str, provider: str, content: str = "Sunny all week in Oslo!") -> str:
    """A directive making ``provider`` answer ``content`` instead of the JSON."""
    return directive({"content": content, "match": {"provider": provider}}, tag)


@pytest.mark.parametrize(
    ("provider", "variant", "native"),
    [
        ("zai", "glm-4.7", False),
        ("bigmodel", "glm-4.6", False),
        ("openrouter", "glm-4.6", True),
        ("siliconflow", "glm-4.6", True),
        ("deepinfra", "glm-4.7", True),
    ],
)
async def test_sdk_parse_with_a_pydantic_model(
    client: openai.AsyncOpenAI, provider: str, variant: str, native: bool
) -> None:
    raw = await client.chat.completions.with_raw_response.parse(
        model=variant,
        messages=says("Forecast for Oslo, please."),
        response_format=Forecast,
        extra_headers={"x-glm-providers": provider, "x-glm-fallback": "none"},
    )
    parsed = raw.parse().choices[0].message.parsed
    assert isinstance(parsed, Forecast)
    assert raw.headers["x-glm-provider"] == provider
    adapted = raw.headers.get("x-glm-adapted", "")
    assert ("response_format=json_object+schema_prompt" in adapted) is not native


async def test_beta_parse_entry_point_works_too(client: openai.AsyncOpenAI) -> None:
    resp = await client.beta.chat.completions.parse(
        model="glm-4.7",
        messages=says("Forecast for Bergen."),
        response_format=Forecast,
        extra_headers={"x-glm-providers": "zai", "x-glm-fallback": "none"},
    )
    assert isinstance(resp.choices[0].message.parsed, Forecast)


async def test_a_miss_is_retried_once_on_the_next_candidate(
    http: httpx.AsyncClient, simulator: Proc
) -> None:
    tag = nonce()
    body = chat_body(text_msg("forecast " + miss(tag, "zai")), "glm-4.7", response_format=RF)
    r = await http.post(CHAT, json=body, headers=ZHIPU_FIRST)
    assert r.status_code == 200, r.text
    assert (r.headers["x-glm-provider"], r.headers["x-glm-attempts"]) == ("bigmodel", "2")
    assert "zai/glm-4.7 schema_mismatch" in r.headers["x-glm-fallback-reason"]
    answer = orjson.loads(r.json()["choices"][0]["message"]["content"])
    assert set(answer) == {"city", "days"} and answer["days"] >= 1
    assert [q["provider"] for q in sim_requests(simulator, tag)] == ["zai", "bigmodel"]


async def test_a_second_miss_is_a_clear_error_not_free_text(
    http: httpx.AsyncClient, simulator: Proc
) -> None:
    tag = nonce()
    rules = [
        {"content": "Sunny all week!", "match": {"provider": "zai"}},
        {"content": '{"city": "Oslo"}', "match": {"provider": "bigmodel"}},
    ]
    body = chat_body(text_msg("forecast " + directive(rules, tag)), "glm-4.7", response_format=RF)
    r = await http.post(CHAT, json=body, headers=ZHIPU_FIRST)
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert (err["code"], err["type"]) == ("structured_output_invalid", "upstream_error")
    assert "not JSON" in err["message"] and "'days' is a required property" in err["message"]
    assert [a["class"] for a in err["attempts"]] == ["schema_mismatch", "schema_mismatch"]
    # deepinfra was a candidate too: one retry only
    assert [q["provider"] for q in sim_requests(simulator, tag)] == ["zai", "bigmodel"]


async def test_a_fenced_answer_is_unwrapped(http: httpx.AsyncClient) -> None:
    tag = nonce()
    fenced = '```json\n{"city": "Oslo", "days": 3}\n```'
    body = chat_body(text_msg("x " + miss(tag, "zai", fenced)), "glm-4.7", response_format=RF)
    r = await http.post(CHAT, json=body, headers=ZHIPU_FIRST)
    assert r.status_code == 200 and r.headers["x-glm-attempts"] == "1"
    assert r.json()["choices"][0]["message"]["content"] == '{"city": "Oslo", "days": 3}'


async def test_only_json_schema_requests_are_validated(http: httpx.AsyncClient) -> None:
    tag = nonce()
    body = chat_body(
        text_msg("x " + miss(tag, "zai")), "glm-4.7", response_format={"type": "json_object"}
    )
    r = await http.post(CHAT, json=body, headers=ZHIPU_FIRST)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == (
        "Sunny all week in Oslo!"
    )


async def test_an_invalid_schema_is_refused_before_any_upstream_call(
    http: httpx.AsyncClient, simulator: Proc
) -> None:
    tag = nonce()
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}
    r = await http.post(CHAT, json=chat_body(text_msg(tag), "glm-4.7", response_format=rf))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "response_format.json_schema.schema"
    assert sim_requests(simulator, tag) == []


async def stream_events(
    http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> list[Any]:
    async with http.stream("POST", CHAT, json={**body, "stream": True}, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        return parse_sse((await r.aread()).decode())


@pytest.mark.parametrize("provider", ["zai", "deepinfra"])
async def test_streamed_answers_are_checked_at_the_end(
    http: httpx.AsyncClient, provider: str
) -> None:
    headers = {"x-glm-providers": provider, "x-glm-fallback": "none"}
    good = await stream_events(
        http, chat_body(text_msg("x"), "glm-4.7", response_format=RF), headers
    )
    assert good[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in good[:-1] if e["choices"])
    assert set(orjson.loads(text)) == {"city", "days"}
    tag = nonce()
    body = chat_body(text_msg("x " + miss(tag, provider)), "glm-4.7", response_format=RF)
    bad = await stream_events(http, body, headers)
    assert bad[-1] != "[DONE]" and bad[-1]["error"]["code"] == "stream_interrupted"
    assert "schema_mismatch" in bad[-1]["error"]["message"]
