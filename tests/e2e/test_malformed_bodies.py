"""Malformed bodies, many at once: every one gets an answer or an OpenAI-style error, never a 500.

Each field the gateway or a host reads is set, one at a time, to values of every wrong type, and
malformed messages, tools, tool choices and response formats are sent, against models of every
dialect, streamed and not (seeded choice: the same requests every run). The real gateway in
front of the real simulator: a value that crashed either (the simulator's scan of a non-array
``tool_calls`` did) would show as a 500 or as the gateway's 502 after retrying a host's 500s.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.support.e2e import AUTH, assert_error_shape, parse_sse
from tests.support.procs import Proc

CHAT = "/v1/chat/completions"
MODELS = ["auto", "glm-4.7", "glm-4.6v", "glm-4.5-air", "glm-4-32b", "glm-4-9b", "glm-4v-9b"]
"""Z.ai/BigModel (zhipu dialect), vLLM, OpenRouter, Together, SiliconFlow and others."""

WRONG = [None, 0, -1, 1.5, True, "", "x", [], {}, [None], [{}], {"a": 1}, 10**30, "9" * 300]
FIELDS = [
    "tools", "tool_choice", "response_format", "stream_options", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "stop", "n", "user", "route", "functions",
    "logprobs", "seed", "thinking", "parallel_tool_calls",
]  # fmt: skip
BAD_MESSAGES: list[Any] = [
    {"role": 1},
    {"role": "user", "content": 5},
    {"role": "user", "content": [5]},
    {"role": "user", "content": [{"type": "text"}]},
    {"role": "user", "content": [{"type": "text", "text": 5}]},
    {"role": "user", "content": [{"type": "image_url"}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": "x"}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]},
    {"role": "user", "name": 5, "content": "x"},
    {"role": "tool"},
    {"role": "assistant", "tool_calls": 5},
    {"role": "assistant", "tool_calls": [{}]},
    {"role": "assistant", "tool_calls": [{"function": 5}]},
]
FN = {"name": "f", "parameters": {"type": "object"}}
BAD_TOOLS: list[Any] = [
    [{"type": "function"}],
    [{"type": "function", "function": 5}],
    [{"type": "function", "function": {"name": 5}}],
    [{"type": "function", "function": {"name": "f", "parameters": 5}}],
    [{"type": "web_search", "web_search": 5}],
    [{"type": "code_interpreter"}],
    [{"type": "function", "function": {**FN, "strict": True}}],
]
TOOL_CHOICES: list[Any] = [
    None, "required", "none", 5, {"type": "function"},
    {"type": "function", "function": {"name": "f"}},
]  # fmt: skip
RESPONSE_FORMATS: list[Any] = [
    {"type": "json_schema"},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": 5}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
    {"type": "json_object"},
    {"type": 5},
    {"type": "weird"},
]


def _cases() -> list[dict[str, Any]]:
    rng = random.Random(20261129)
    user = {"role": "user", "content": "hi"}
    out: list[dict[str, Any]] = []

    def add(**fields: Any) -> None:
        body = {"model": rng.choice(MODELS), "messages": [user], **fields}
        if "stream" not in fields:
            body["stream"] = rng.random() < 0.5
        out.append(body)

    for name in FIELDS:
        for value in WRONG:
            add(**{name: value})
    for value in WRONG:
        add(model=value)
        add(messages=value)
        add(stream=value)
    for msg in BAD_MESSAGES:
        add(messages=[user, msg])
    for tools in BAD_TOOLS:
        for choice in TOOL_CHOICES:
            add(tools=tools, **({} if choice is None else {"tool_choice": choice}))
    for rf in RESPONSE_FORMATS:
        add(response_format=rf, stream=False)
        add(response_format=rf, stream=True)
    return out


CASES = _cases()


@pytest_asyncio.fixture
async def http(gateway: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=30) as c:
        yield c


@pytest.mark.parametrize("chunk", range(0, len(CASES), 100))
async def test_malformed_bodies_get_an_answer_or_a_named_error(
    http: httpx.AsyncClient, chunk: int
) -> None:
    for body in CASES[chunk : chunk + 100]:
        r = await http.post(CHAT, content=json.dumps(body))  # stdlib json: 10**30 too
        where = f"{r.status_code} for {body}: {r.text[:300]}"
        assert r.status_code in (200, 400, 403, 404, 422), where
        if r.status_code != 200:
            err = assert_error_shape(r.json())
            assert err["param"] or err["code"], where  # says what was wrong
        elif body.get("stream") is True:
            assert parse_sse(r.text)[-1] == "[DONE]", where
        else:
            assert r.json()["object"] == "chat.completion", where
