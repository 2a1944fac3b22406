"""Client errors on the hot path: bad JSON, bad fields, bad X-GLM-* values, auth, size, deadline.

Every error is ``{"error": {message, type, param, code}}`` and carries the X-Request-Id and
X-GLM-* headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from tests.support.e2e import (
    AUTH,
    assert_error_shape,
    assert_glm_headers,
    chat_body,
    directive,
    module_gateway,
    nonce,
    sdk_client,
    text_msg,
)
from tests.support.procs import Proc

CHAT = "/v1/chat/completions"


@pytest_asyncio.fixture
async def http(gateway: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=30) as c:
        yield c


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert_glm_headers(r.headers)
    return assert_error_shape(r.json())


# --- the body --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"[1, 2]", b'"a string"', b'{"model": "auto", "messages": [}'],
    ids=["garbage", "empty", "array", "string", "truncated"],
)
async def test_bad_json_is_400(http: httpx.AsyncClient, raw: bytes) -> None:
    r = await http.post(CHAT, content=raw, headers={"Content-Type": "application/json"})
    err = error_of(r, 400)
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_json"
    assert r.headers["x-glm-attempts"] == "0"
    assert r.headers["x-glm-variant"] == "none"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "auto"}, "messages"),
        ({"model": "auto", "messages": []}, "messages"),
        ({"model": "auto", "messages": "hi"}, "messages"),
        ({"model": "auto", "messages": [{"content": "hi"}]}, "messages[0]"),
        ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            chat_body([*text_msg("hi"), {"role": "assistant", "content": None, "tool_calls": 5}]),
            "messages[1].tool_calls",
        ),
        (chat_body(text_msg("hi"), stream="yes"), "stream"),
        (chat_body(text_msg("hi"), max_tokens=0), "max_tokens"),
        (chat_body(text_msg("hi"), max_tokens="many"), "max_tokens"),
        (chat_body(text_msg("hi"), tools={"type": "function"}), "tools"),
        (chat_body(text_msg("hi"), tools=[{"type": "teleport"}]), "tools[0].type"),
        (chat_body(text_msg("hi"), response_format="json"), "response_format"),
        (
            chat_body(text_msg("hi"), response_format={"type": "json_schema"}),
            "response_format.json_schema",
        ),
        (chat_body(text_msg("hi"), route={"colour": "blue"}), "route"),
        (chat_body(text_msg("hi"), route=["vision"]), "route"),
        (chat_body(text_msg("hi"), route={"capabilities": ["mind_reading"]}), "route.capabilities"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    http: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    err = error_of(await http.post(CHAT, json=body), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


async def test_unknown_model_is_404_model_not_found(http: httpx.AsyncClient) -> None:
    err = error_of(await http.post(CHAT, json=chat_body(text_msg("hi"), model="gpt-4o")), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "glm-4.7" in err["message"]  # tells the caller what exists


# --- X-GLM-* header values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-GLM-Capabilities", "telepathy"),
        ("X-GLM-Capabilities", ","),
        ("X-GLM-Min-Context", "lots"),
        ("X-GLM-Min-Context", "0"),
        ("X-GLM-Min-Context", "-5k"),
        ("X-GLM-Params", "about 9B"),
        ("X-GLM-Params", "<=nineB"),
        ("X-GLM-Prefer", "cheapest"),
        ("X-GLM-Fallback", "sometimes"),
        ("X-GLM-Providers", "nosuchhost"),
        ("X-GLM-Providers", "zai,nosuchhost"),
        ("X-GLM-Timeout", "soon"),
        ("X-GLM-Timeout", "0"),
        ("X-GLM-Timeout", "-1"),
        ("X-GLM-Timeout", "nan"),
        ("X-GLM-Timeout", "99999"),
    ],
)
async def test_malformed_header_is_400_naming_the_header(
    http: httpx.AsyncClient, header: str, value: str
) -> None:
    r = await http.post(CHAT, json=chat_body(text_msg("hi")), headers={header: value})
    err = error_of(r, 400)
    assert header in err["message"], err
    assert err["param"] == header
    assert err["type"] == "invalid_request_error"


async def test_header_names_are_case_insensitive(http: httpx.AsyncClient) -> None:
    r = await http.post(CHAT, json=chat_body(text_msg("hi")), headers={"x-glm-prefer": "nope"})
    assert "X-GLM-Prefer" in error_of(r, 400)["message"]


async def test_bad_header_through_the_sdk(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await client.chat.completions.create(
            model="auto", messages=text_msg("hi"), extra_headers={"X-GLM-Min-Context": "big"}
        )
    assert ei.value.status_code == 400
    assert "X-GLM-Min-Context" in ei.value.message


# --- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key", "Basic c2stdGVzdC1tYXN0ZXI=", "Bearer"]
)
async def test_bad_key_is_401(gateway: Proc, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as anon:
        r = await anon.post(CHAT, json=chat_body(text_msg("hi")), headers=headers)
    err = error_of(r, 401)
    assert err["code"] == "invalid_api_key"
    assert "sk-test-master" not in r.text


async def test_bad_key_through_the_sdk(gateway: Proc) -> None:
    async with sdk_client(gateway, api_key="sk-wrong", timeout=30) as c:
        with pytest.raises(openai.AuthenticationError):
            await c.chat.completions.create(model="auto", messages=text_msg("hi"))


async def test_models_require_the_key(gateway: Proc) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as anon:
        r = await anon.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert_error_shape(r.json())


# --- deadline, unknown routes ----------------------------------------------------------------


async def test_deadline_passes_504(http: httpx.AsyncClient) -> None:
    tag = nonce()
    slow = directive({"latency_ms": 4000}, tag)
    r = await http.post(
        CHAT,
        json=chat_body(text_msg(f"slow please {slow}"), model="glm-4.5"),
        headers={"X-GLM-Timeout": "1", "X-GLM-Providers": "fireworks"},
    )
    err = error_of(r, 504)
    assert err["type"] == "timeout_error" and err["code"] == "deadline_exceeded"
    assert r.headers["x-glm-variant"] == "glm-4.5"
    assert r.headers["x-glm-provider"] == "fireworks"
    assert int(r.headers["x-glm-attempts"]) >= 1
    assert err["attempts"][0]["class"] == "timeout"


async def test_deadline_passes_504_through_the_sdk(client: openai.AsyncOpenAI) -> None:
    tag = nonce()
    slow = directive({"latency_ms": 4000}, tag)
    with pytest.raises(openai.APIStatusError) as ei:
        await client.chat.completions.create(
            model="glm-4.5",
            messages=text_msg(f"slow {slow}"),
            extra_headers={"X-GLM-Timeout": "0.5", "X-GLM-Providers": "fireworks"},
        )
    assert ei.value.status_code == 504


async def test_unknown_path_is_404_error_shape(http: httpx.AsyncClient) -> None:
    r = await http.get("/v1/nothing-here")
    assert r.status_code == 404
    assert_error_shape(r.json())
    assert r.headers.get("x-request-id")


# --- body size -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(
        simulator, tmp_path_factory.mktemp("small"), server={"max_body_bytes": 4096}
    ) as gw:
        yield gw


async def test_body_too_large_is_413(small_gateway: Proc) -> None:
    body = chat_body(text_msg("x" * 8000))
    async with httpx.AsyncClient(base_url=small_gateway.url, headers=AUTH, timeout=30) as c:
        r = await c.post(CHAT, json=body)
        err = error_of(r, 413)
        assert err["code"] == "request_too_large"
        # the same gateway still answers a small request
        ok = await c.post(CHAT, json=chat_body(text_msg("hi")))
    assert ok.status_code == 200
