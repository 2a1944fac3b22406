"""A provider key that fails auth/balance is bad for every deployment that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.e2e import (
    directive,
    module_gateway,
    nonce,
    sdk_client,
    text_msg,
    upstream_hits,
)
from tests.support.procs import Proc


@pytest.fixture(scope="module")
def kb_gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(
        simulator, tmp_path_factory.mktemp("keybad"), breaker={"failure_threshold": 1000}
    ) as gw:
        yield gw


async def test_bad_key_skips_and_marks_every_deployment_on_that_key(
    kb_gateway: Proc, simulator: Proc
) -> None:
    tag = nonce()
    fail = directive({"match": {"provider": "together"}, "status": 401}, tag)
    async with sdk_client(kb_gateway) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="auto",
            messages=text_msg(f"hi {tag} {fail}"),
            extra_headers={"X-GLM-Providers": "together,deepinfra", "X-GLM-Prefer": "quality"},
        )
        # together serves glm-4.7, glm-4.6 and glm-4.5-air with one key: after the first 401
        # the gateway goes straight to the next provider instead of trying that key twice more.
        assert raw.headers["x-glm-attempts"] == "2"
        assert raw.headers["x-glm-provider"] == "deepinfra"
        assert upstream_hits(simulator, tag) == [
            ("together", "zai-org/GLM-4.7"),
            ("deepinfra", "zai-org/GLM-4.7"),
        ]
        explained = await c.post(
            "/route",
            cast_to=object,
            body={"model": "glm-4.5-air", "messages": text_msg("x")},
            options={"headers": {"X-GLM-Providers": "together,fireworks"}},
        )
    assert isinstance(explained, dict)
    together = [r for r in explained["rejected"] if r["provider"] == "together"]
    assert together, explained["rejected"]
    assert any("circuit open" in reason for reason in together[0]["reasons"])
    assert explained["candidates"][0]["provider"] == "fireworks"
