"""Deadlines that hold once a stream has started (issue 13, point 3).

An upstream that trickles one chunk every 0.7 s used to run to ``[DONE]`` past
``X-GLM-Timeout``. Now the total deadline and the inter-chunk idle limit
(``routing.stream_idle_timeout_s``) hold for the whole stream: the client gets an error event
naming the timeout (never ``[DONE]``), the access log says 504, and the upstream is cancelled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.e2e import (
    AUTH,
    MASTER_KEY,
    directive,
    module_gateway,
    nonce,
    parse_sse,
    text_msg,
    wait_log_for,
)
from tests.support.procs import Proc

WORDS = 40 * 5  # 40 content chunks of five words


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("deadlines")
    with module_gateway(simulator, tmp, routing={"stream_idle_timeout_s": 1.0}) as proc:
        yield proc


def trickle(tag: str, delay_ms: int) -> list[dict[str, Any]]:
    content = " ".join(f"w{i}" for i in range(WORDS))
    return text_msg(directive({"content": content, "chunk_delay_ms": delay_ms}, tag) + tag)


def stream(gw: Proc, messages: list[dict[str, Any]], **headers: str) -> tuple[Any, list[Any]]:
    rid = "req-" + nonce()
    with httpx.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        json={"model": "glm-4-9b", "stream": True, "messages": messages},
        headers={**AUTH, "X-Request-Id": rid, **headers},
        timeout=60,
    ) as r:
        assert r.status_code == 200
        events = parse_sse(r.read().decode())
    return rid, events


def content_chunks(events: list[Any]) -> int:
    return sum(
        1
        for e in events
        if isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content")
    )


def test_the_total_deadline_holds_mid_stream(gw: Proc) -> None:
    tag = nonce()
    rid, events = stream(gw, trickle(tag, 700), **{"X-GLM-Timeout": "3"})
    assert "[DONE]" not in events
    err = events[-1]["error"]
    assert err["code"] == "deadline_exceeded" and err["type"] == "timeout_error"
    assert "3s" in err["message"] and "cancelled" in err["message"]
    assert 0 < content_chunks(events) < 40  # it started, and it was stopped early
    rec = wait_log_for(gw, rid)
    assert rec["status"] == 504 and rec["error"] == "deadline_exceeded"


def test_the_idle_limit_holds_between_chunks(gw: Proc) -> None:
    tag = nonce()
    rid, events = stream(gw, trickle(tag, 2500))
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "stream_idle_timeout"
    assert "routing.stream_idle_timeout_s" in events[-1]["error"]["message"]
    assert content_chunks(events) == 1  # the first chunk, then silence past the limit
    assert wait_log_for(gw, rid)["status"] == 504


def test_a_steady_stream_inside_both_limits_completes(gw: Proc) -> None:
    tag = nonce()
    _, events = stream(gw, trickle(tag, 5), **{"X-GLM-Timeout": "30"})
    assert events[-1] == "[DONE]" and content_chunks(events) == 40


async def test_the_sdk_raises_when_the_deadline_stops_a_stream(gw: Proc) -> None:
    tag = nonce()
    async with openai.AsyncOpenAI(
        base_url=gw.url + "/v1", api_key=MASTER_KEY, max_retries=0
    ) as client:
        chunks = await client.chat.completions.create(
            model="glm-4-9b",
            messages=trickle(tag, 700),  # type: ignore[arg-type]
            stream=True,
            extra_headers={"X-GLM-Timeout": "2"},
        )
        with pytest.raises(openai.APIError, match="deadline"):
            async for _ in chunks:
                pass
