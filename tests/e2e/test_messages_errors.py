"""Every error class of ``/v1/messages`` in Anthropic's shape, through the real SDK where it can
send the request: ``{"type": "error", "error": {"type", "message"}, "request_id"}`` (spec and
SDK types, tests/support/messages_wire.py), the SDK's matching exception, and the ``X-GLM-*``
headers on every one of them.

Own gateway: a small body cap (413 without sending megabytes), breakers that open only on
explicit cooldowns (the capacity faults here must not leak into other tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.support.e2e import AUTH, assert_glm_headers, nonce, wait_for_log
from tests.support.messages_e2e import (
    SONNET,
    body,
    messages_gateway,
    post,
    request,
    said,
    sdk,
)
from tests.support.messages_wire import check_error
from tests.support.procs import Proc

BODY_CAP = 64_000


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with messages_gateway(
        simulator, tmp_path_factory.mktemp("msg-errors"), server={"max_body_bytes": BODY_CAP}
    ) as proc:
        yield proc


async def _key(gw: Proc, **spec: Any) -> str:
    r = await request(
        gw, "POST", "/admin/keys", json={"name": "t-" + nonce(), **spec}, headers=AUTH
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["key"])


def anthropic_error(exc: anthropic.APIStatusError, status: int, etype: str) -> dict[str, Any]:
    """The SDK's exception carries ``status`` and an Anthropic error body of ``etype``."""
    assert exc.status_code == status, (exc.status_code, exc.response.text)
    parsed = check_error(exc.response.json())
    assert parsed.error.type == etype, exc.response.text
    assert parsed.error.message.strip()
    assert_glm_headers(exc.response.headers)
    err: dict[str, Any] = exc.response.json()["error"]
    return err


async def _create(c: anthropic.AsyncAnthropic, text: str, **kw: Any) -> Any:
    return await c.messages.create(
        model=kw.pop("model", SONNET),
        max_tokens=kw.pop("max_tokens", 256),
        messages=[{"role": "user", "content": text}],
        **kw,
    )


# --- the caller's faults ------------------------------------------------------------------------


async def test_400_invalid_request(gw: Proc) -> None:
    r = await post(gw, {"model": SONNET, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    check_error(r.json())
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]
    assert_glm_headers(r.headers)
    assert r.json()["request_id"] == r.headers["x-request-id"]

    async with sdk(gw) as c:
        with pytest.raises(anthropic.BadRequestError) as ei:
            await _create(c, "hi", extra_body={"temperature": 3.5})
        assert anthropic_error(ei.value, 400, "invalid_request_error")["param"] == "temperature"
        with pytest.raises(anthropic.BadRequestError) as ei:
            await c.messages.create(
                model=SONNET,
                max_tokens=64,
                messages=[{"role": "assistant", "content": [{"type": "image"}]}],  # type: ignore[list-item]
            )
        anthropic_error(ei.value, 400, "invalid_request_error")

    for raw in (b"{not json", b"[]", b'{"model": 5, "max_tokens": 1, "messages": []}'):
        r = await post(gw, raw)
        assert r.status_code == 400, raw
        check_error(r.json())


async def test_401_wrong_or_missing_key(gw: Proc) -> None:
    async with sdk(gw, key="sk-wrong-key-000") as c:
        with pytest.raises(anthropic.AuthenticationError) as ei:
            await _create(c, "hi")
    anthropic_error(ei.value, 401, "authentication_error")
    async with sdk(gw, key="sk-wrong-key-000", bearer=True) as c:
        with pytest.raises(anthropic.AuthenticationError) as ei:
            await _create(c, "hi")
    anthropic_error(ei.value, 401, "authentication_error")
    r = await request(gw, "POST", "/v1/messages", json=body("hi"))
    assert r.status_code == 401
    check_error(r.json())
    r = await request(
        gw, "POST", "/v1/messages/count_tokens", json=body("hi"), headers={"x-api-key": "nope"}
    )
    assert r.status_code == 401 and check_error(r.json()).error.type == "authentication_error"


async def test_403_a_key_not_allowed_the_variant(gw: Proc) -> None:
    key = await _key(gw, allowed_variants=["glm-4-9b"])
    async with sdk(gw, key=key) as c:
        with pytest.raises(anthropic.PermissionDeniedError) as ei:
            await _create(c, "hi", model="glm-4.7")
        err = anthropic_error(ei.value, 403, "permission_error")
        assert err["code"] == "model_not_allowed"
        ok = await _create(c, "hi", model="glm-4-9b")  # what it may use still works
    assert ok.model == "glm-4-9b"


async def test_404_unknown_model(gw: Proc) -> None:
    async with sdk(gw) as c:
        with pytest.raises(anthropic.NotFoundError) as ei:
            await _create(c, "hi", model="gpt-4o")
    assert "gpt-4o" in anthropic_error(ei.value, 404, "not_found_error")["message"]


async def test_413_body_too_large(gw: Proc) -> None:
    async with sdk(gw) as c:
        with pytest.raises(anthropic.APIStatusError) as ei:
            await _create(c, "x" * (BODY_CAP + 10))
    anthropic_error(ei.value, 413, "invalid_request_error")
    r = await post(gw, body("x" * (BODY_CAP + 10)), path="/v1/messages/count_tokens")
    assert r.status_code == 413
    check_error(r.json())


async def test_429_key_rpm(gw: Proc) -> None:
    key = await _key(gw, rpm=1)
    async with sdk(gw, key=key) as c:
        await _create(c, "first")
        with pytest.raises(anthropic.RateLimitError) as ei:
            await _create(c, "second")
    err = anthropic_error(ei.value, 429, "rate_limit_error")
    assert int(ei.value.response.headers["retry-after"]) >= 1
    assert "rpm" in err["message"].lower() or "per minute" in err["message"].lower()


# --- the hosts' faults ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_529_when_every_candidate_is_out_of_capacity(gw: Proc, stream: bool) -> None:
    tag = nonce()
    rules = [
        {"match": {"provider": "zai"}, "status": 429, "code": "1305"},
        {"match": {"provider": "bigmodel"}, "status": 503, "message": "overloaded"},
    ]
    headers = {"X-GLM-Providers": "zai,bigmodel", "X-GLM-Fallback": "providers"}
    r = await post(gw, body(said("busy?", tag, rules), stream=stream), headers)
    assert r.status_code == 529, r.text
    assert r.headers["content-type"].startswith("application/json")  # not committed: no stream
    parsed = check_error(r.json())
    assert parsed.error.type == "overloaded_error"
    assert_glm_headers(r.headers)
    assert int(r.headers["x-glm-attempts"]) >= 2
    assert r.headers["retry-after"]
    async with sdk(gw) as c:
        with pytest.raises(anthropic.OverloadedError):
            await _create(c, said("busy?", nonce(), rules), extra_headers=headers)


async def test_502_every_candidate_failed(gw: Proc) -> None:
    tag = nonce()
    rule = {"status": 500, "message": "boom"}
    headers = {"X-GLM-Providers": "zai,bigmodel", "X-GLM-Fallback": "providers"}
    async with sdk(gw) as c:
        with pytest.raises(anthropic.InternalServerError) as ei:
            await _create(c, said("fail", tag, rule), extra_headers=headers)
    err = anthropic_error(ei.value, 502, "api_error")
    assert err["code"] == "all_candidates_failed"
    assert [a["provider"] for a in err["attempts"]][-1] == "bigmodel"


async def test_504_deadline(gw: Proc) -> None:
    tag = nonce()
    rid = "req-504-" + tag
    rule = {"latency_ms": 4000}
    headers = {"X-GLM-Providers": "zai", "X-GLM-Timeout": "1", "X-Request-Id": rid}
    for stream in (False, True):
        r = await post(gw, body(said("slow", tag, rule), stream=stream), headers)
        assert r.status_code == 504, r.text
        assert check_error(r.json()).error.type == "timeout_error"
        assert_glm_headers(r.headers)
    rec = await wait_for_log(gw, rid)
    assert rec["status"] == 504 and rec["api"] == "messages"


async def test_type_slips_in_a_replay_are_400s_naming_the_field(gw: Proc) -> None:
    """A replayed ``tool_use`` whose ``input`` is an array crashed a proxy elsewhere."""
    use = {"type": "tool_use", "id": "toolu_x", "name": "Bash", "input": ["ls"]}
    result = {"type": "tool_result", "tool_use_id": "toolu_x", "content": [{"type": "text"}]}
    for turns, param in (
        ([{"role": "assistant", "content": [use]}], "messages[1].content[0].input"),
        ([{"role": "user", "content": [result]}], "messages[1].content[0].content[0].text"),
    ):
        payload = body("hi", messages=[{"role": "user", "content": "hi"}, *turns])
        r = await post(gw, payload)
        assert r.status_code == 400, r.text
        assert check_error(r.json()).error.type == "invalid_request_error"
        assert r.json()["error"]["param"] == param


async def test_401_on_the_anthropic_model_list_is_anthropic_shaped(gw: Proc) -> None:
    async with sdk(gw, key="sk-wrong-key-000") as c:
        with pytest.raises(anthropic.AuthenticationError) as ei:
            await c.models.list(limit=1000)
    assert ei.value.status_code == 401
    assert check_error(ei.value.response.json()).error.type == "authentication_error"
