"""Every capable deployment at its own ``rpm``: 429 with ``Retry-After``, not a 503.

An outside audit found this path untested (breaking it failed no test). A deployment's own
limit is a promise the gateway keeps for the host, so the caller is told to slow down (429),
as the host itself would, rather than that the service is down (503).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.e2e import AUTH, assert_error_shape, module_gateway, text_msg
from tests.support.procs import Proc

RPM = 2
URL = "http://127.0.0.1:9/v1"  # replaced by --simulator


def providers_yaml() -> str:
    dep = {"variant": "glm-4-9b", "model": "THUDM/glm-4-9b-chat", "rpm": RPM}
    return yaml.safe_dump(
        {
            "providers": {
                "vllm": {"name": "vLLM", "dialect": "vllm", "base_url": URL, "deployments": [dep]},
                "siliconflow": {
                    "name": "SiliconFlow",
                    "dialect": "siliconflow",
                    "base_url": URL,
                    "api_key_env": "SF_KEY",
                    "deployments": [{**dep, "priority": 1}],
                },
            }
        }
    )


@pytest.fixture(scope="module")
def limited(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp: Path = tmp_path_factory.mktemp("deprpm")
    env = {"SF_KEY": "sim-key"}
    with module_gateway(simulator, tmp, providers_yaml=providers_yaml(), env=env) as proc:
        yield proc


def ask(gw: Proc) -> httpx.Response:
    body = {"model": "glm-4-9b", "messages": text_msg("hi")}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)


def test_all_deployments_at_their_rpm_is_a_429_with_retry_after(limited: Proc) -> None:
    answered = [ask(limited) for _ in range(2 * RPM)]
    assert [r.status_code for r in answered] == [200] * (2 * RPM)
    assert {r.headers["x-glm-provider"] for r in answered} == {"vllm", "siliconflow"}
    r = ask(limited)
    assert r.status_code == 429, r.text
    err = assert_error_shape(r.json(), 429)
    assert err["type"] == "rate_limit_error"
    assert "at its own rate limit" in err["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
