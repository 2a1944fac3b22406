"""Messages sent as is to hosts that speak Messages natively (Z.ai's and BigModel's Anthropic
endpoints, ``anthropic_base_url``), and translated everywhere else; fallback crosses the two."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.e2e import AUTH, MASTER_KEY, directive, module_gateway, nonce, sim_requests
from tests.support.messages_wire import check_message, check_stream
from tests.support.procs import Proc

BETA = "claude-code-20250219,interleaved-thinking-2025-05-14"


@pytest.fixture(scope="module")
def gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """Breakers of its own that no host-stated cooldown keeps open past this module's cases."""
    breaker = {"failure_threshold": 1000, "max_explicit_cooldown_s": 0.01, "cooldown_s": 0.01}
    with module_gateway(simulator, tmp_path_factory.mktemp("native"), breaker=breaker) as proc:
        yield proc


_CLIENTS: dict[str, anthropic.Anthropic] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for c in _CLIENTS.values():
        c.close()
    _CLIENTS.clear()


def client(gw: Proc) -> anthropic.Anthropic:
    """One SDK client per gateway, closed when the module ends."""
    if gw.url not in _CLIENTS:
        _CLIENTS[gw.url] = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
    return _CLIENTS[gw.url]


HINTS = {"context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}}


def ask(tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "glm-4.7",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": f"hi {tag}"}],
        "metadata": {"user_id": "u-123456"},
        **extra,
    }


def test_a_native_host_gets_the_body_as_sent(gateway: Proc, simulator: Proc) -> None:
    tag = nonce()
    raw = client(gateway).messages.with_raw_response.create(
        **ask(tag),
        extra_body=HINTS,
        extra_headers={"X-GLM-Providers": "zai", "anthropic-beta": BETA, "Cookie": "c=1"},
    )
    check_message(raw.http_response.json())
    assert raw.headers["x-glm-provider"] == "zai"
    assert "api=messages:native" in raw.headers["x-glm-adapted"]
    (sent,) = sim_requests(simulator, tag)
    assert sent["path"] == "/zai/anthropic/v1/messages"
    body = sent["body"]
    assert body["model"] == "glm-4.7" and body["metadata"] == {"user_id": "u-123456"}
    assert body["context_management"]["edits"][0]["type"] == "clear_thinking_20251015"
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["anthropic-beta"] == BETA
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", headers["anthropic-version"])  # the SDK's own
    assert "cookie" not in headers and not any(k.startswith("x-glm") for k in headers)


def test_elsewhere_the_same_body_is_translated(gateway: Proc, simulator: Proc) -> None:
    tag = nonce()
    raw = client(gateway).messages.with_raw_response.create(
        **ask(tag), extra_body=HINTS, extra_headers={"X-GLM-Providers": "deepinfra"}
    )
    check_message(raw.http_response.json())
    assert "api=messages:native" not in (raw.headers.get("x-glm-adapted") or "")
    (sent,) = sim_requests(simulator, tag)
    assert sent["path"] == "/deepinfra/v1/chat/completions"
    assert "context_management" in raw.headers["x-glm-ignored"]


def test_a_native_stream_passes_through_with_the_clients_model(gateway: Proc) -> None:
    body = {**ask(nonce()), **HINTS, "model": "claude-opus-4-8", "stream": True}
    r = httpx.post(
        gateway.url + "/v1/messages",
        json=body,
        headers={**AUTH, "X-GLM-Providers": "zai,bigmodel", "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert r.status_code == 200
    _, final = check_stream(r.content)
    assert final.model == "claude-opus-4-8"
    assert "api=messages:native" in r.headers["x-glm-adapted"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_native_host_falls_back_to_a_translated_one(
    gateway: Proc, simulator: Proc, stream: bool
) -> None:
    tag = nonce()
    rule = {"match": {"provider": "zai", "api": "messages"}, "status": 529, "times": 1}
    body = {**ask(tag), "messages": [{"role": "user", "content": directive(rule, tag) + tag}]}
    if stream:
        body["stream"] = True
    r = httpx.post(
        gateway.url + "/v1/messages",
        json=body,
        headers={**AUTH, "X-GLM-Providers": "zai,deepinfra"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-glm-provider"] == "deepinfra" and r.headers["x-glm-attempts"] == "2"
    assert "zai" in r.headers["x-glm-fallback-reason"]
    if stream:
        _, final = check_stream(r.content)
        assert final is not None
    else:
        check_message(r.json())
    paths = [q["path"] for q in sim_requests(simulator, tag)]
    assert paths == ["/zai/anthropic/v1/messages", "/deepinfra/v1/chat/completions"]


def test_a_native_stream_failing_after_its_first_byte_ends_with_an_error_event(
    gateway: Proc,
) -> None:
    tag = nonce()
    rule = {
        "match": {"provider": "zai", "api": "messages"},
        "cut_after_chunks": 1,
        "stream_error": {"code": "api_error", "message": "boom"},
    }
    content = directive({**rule, "content": "one two three four five six seven eight"}, tag)
    body = {**ask(tag), "stream": True, "messages": [{"role": "user", "content": content}]}
    r = httpx.post(
        gateway.url + "/v1/messages",
        json=body,
        headers={**AUTH, "X-GLM-Providers": "zai"},
        timeout=30,
    )
    assert r.status_code == 200
    events, final = check_stream(r.content)
    assert final is None and events[-1][0] == "error"
    assert "message_stop" not in [n for n, _ in events]


def test_malformed_anthropic_headers_are_not_passed_on(gateway: Proc, simulator: Proc) -> None:
    time.sleep(0.1)  # the failures above opened zai's circuit for 0.01-0.04 s
    tag = nonce()
    client(gateway).messages.create(
        **ask(tag),
        extra_headers={
            "X-GLM-Providers": "zai",
            "anthropic-version": "yesterday; x-api-key: stolen",
            "anthropic-beta": "a b <script>",
        },
    )
    (sent,) = sim_requests(simulator, tag)
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["anthropic-version"] == "2023-06-01" and "anthropic-beta" not in headers


def test_a_native_answer_names_only_the_clamp_in_x_glm_ignored(gateway: Proc) -> None:
    body = {**ask(nonce()), **HINTS, "max_tokens": 64000}
    r = httpx.post(
        gateway.url + "/v1/messages",
        json=body,
        headers={**AUTH, "X-GLM-Providers": "zai"},
        timeout=30,
    )
    assert r.status_code == 200 and "api=messages:native" in r.headers["x-glm-adapted"]
    assert r.headers["x-glm-ignored"] == "max_tokens=clamped:32000"  # the host got the rest


def test_models_retrieve_in_both_shapes(gateway: Proc) -> None:
    got = client(gateway).models.retrieve("claude-sonnet")
    assert got.id == "claude-sonnet" and got.type == "model"
    with pytest.raises(anthropic.NotFoundError):
        client(gateway).models.retrieve("nope")
    r = httpx.get(gateway.url + "/v1/models/glm-4.7", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["object"] == "model"
