"""A rate limit on a provider key holds for every deployment on that key: after GLM's 1302
(concurrency on this key) the request moves to another provider at once, rather than spending
its attempts on the same key's other variants."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.e2e import AUTH, chat_body, directive, module_gateway, nonce, text_msg
from tests.support.procs import Proc


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(simulator, tmp_path_factory.mktemp("keywide")) as proc:
        yield proc


def test_a_throttled_key_sends_the_request_to_the_next_provider(gw: Proc) -> None:
    tag = nonce()
    rule = {"match": {"provider": "zai"}, "status": 429, "code": "1302"}
    body = chat_body(text_msg(f"hi {tag} {directive(rule, tag)}"), model="coding")
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json=body,
        headers={**AUTH, "X-GLM-Providers": "zai,bigmodel"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-glm-provider"] == "bigmodel"
    assert r.headers["x-glm-attempts"] == "2", r.headers["x-glm-fallback-reason"]
