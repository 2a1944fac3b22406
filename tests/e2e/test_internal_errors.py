"""The last line of defence (issue 13, point 7): shapes checked before use, and any exception
nothing else caught answered in OpenAI's shape with the request id, logged once.

Bugs are planted in a real gateway process by ``tests/support/breakage/sitecustomize.py``; they
fire only for requests that carry a marker, so each test proves one path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.e2e import (
    AUTH,
    MASTER_KEY,
    assert_error_shape,
    directive,
    module_gateway,
    nonce,
    parse_sse,
    text_msg,
)
from tests.support.procs import ROOT, Proc

BREAKAGE = ROOT / "tests" / "support" / "breakage"


@pytest.fixture(scope="module")
def broken(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("broken")
    env = {"PYTHONPATH": str(BREAKAGE), "GLM_TEST_PLANT_BUG": "1"}
    with module_gateway(simulator, tmp, env=env) as proc:
        yield proc


def tracebacks(proc: Proc, marker: str, at_least: int = 0) -> int:
    """Log lines naming ``marker`` (one JSON record per logged error), once ``at_least`` of them
    are there (the record is written after the answer is out) or a bound has passed."""
    end = time.monotonic() + 10
    while True:
        lines = [ln for ln in proc.log_text().splitlines() if marker in ln]
        if len(lines) >= at_least or time.monotonic() > end:
            assert "Exception in ASGI application" not in proc.log_text()  # not re-logged
            return len(lines)
        time.sleep(0.02)


def test_a_bug_before_the_answer_is_a_500_in_openai_shape(broken: Proc) -> None:
    rid = "req-" + nonce()
    r = httpx.post(
        broken.url + "/v1/chat/completions",
        json={"model": "auto", "messages": text_msg("<<boom>>")},
        headers={**AUTH, "X-Request-Id": rid},
        timeout=30,
    )
    assert r.status_code == 500
    err = assert_error_shape(r.json(), 500)
    assert err["type"] == "server_error" and err["code"] == "internal_error"
    assert rid in err["message"] and r.headers["x-request-id"] == rid
    assert tracebacks(broken, "planted bug before the answer", 1) == 1  # logged once
    assert "Traceback" in broken.log_text()
    # the process keeps serving
    ok = httpx.post(
        broken.url + "/v1/chat/completions",
        json={"model": "auto", "messages": text_msg("fine")},
        headers=AUTH,
        timeout=30,
    )
    assert ok.status_code == 200


def test_a_bug_mid_stream_ends_with_an_error_event(broken: Proc) -> None:
    tag = nonce()
    content = f"one two three four five BOOM-CHUNK six seven {tag}"
    msg = directive({"content": content}, tag)
    with httpx.stream(
        "POST",
        broken.url + "/v1/chat/completions",
        json={"model": "glm-4-9b", "stream": True, "messages": text_msg(msg)},
        headers=AUTH,
        timeout=30,
    ) as r:
        assert r.status_code == 200
        events = parse_sse(r.read().decode())
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "internal_error"
    assert tracebacks(broken, "planted bug mid-stream", 1) == 1


async def test_the_sdk_raises_on_it(broken: Proc) -> None:
    async with openai.AsyncOpenAI(
        base_url=broken.url + "/v1", api_key=MASTER_KEY, max_retries=0
    ) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="auto", messages=text_msg("<<boom>>"))
    assert info.value.code == "internal_error"


def test_a_bug_on_a_fastapi_endpoint_is_a_500_in_openai_shape(broken: Proc) -> None:
    before = tracebacks(broken, "planted bug in /v1/models")
    r = httpx.get(broken.url + "/v1/models", headers=AUTH, timeout=30)
    assert r.status_code == 500
    err = assert_error_shape(r.json(), 500)
    assert err["code"] == "internal_error"
    assert r.headers["x-request-id"] in err["message"]
    assert tracebacks(broken, "planted bug in /v1/models", before + 1) == before + 1
