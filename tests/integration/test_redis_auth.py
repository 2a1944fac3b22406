"""Redis Sentinel and Cluster behind passwords: the state lands there, and no password leaves.

Real ``redis-server`` processes with ``requirepass`` (every data node; the sentinels with a
password of their own), a real gateway started with ``GLM_GATEWAY_REDIS_PASSWORD`` and
``GLM_GATEWAY_REDIS_SENTINEL_PASSWORD``, the openai SDK against it. A wrong password is what
Redis down is: requests are answered from local state and ``/readyz`` says degraded; the log
names the failure, never a password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.support.e2e import AUTH, GATEWAY_ENV, gateway_yaml, nonce, sdk_client
from tests.support.procs import Proc, config_copy, start_gateway
from tests.support.redis_ha import RedisClusterGroup, SentinelGroup

pytestmark = pytest.mark.timeout(90)

DATA_PASSWORD = "data-" + nonce()
SENTINEL_PASSWORD = "sentinel-" + nonce()


class Secured:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.cluster: RedisClusterGroup | None = None
        self.sentinel: SentinelGroup | None = None
        if mode == "cluster":
            self.cluster = RedisClusterGroup(replicas=0, password=DATA_PASSWORD)
            self.env = {"GLM_GATEWAY_REDIS_CLUSTER_NODES": self.cluster.seeds}
        else:
            self.sentinel = SentinelGroup(DATA_PASSWORD, SENTINEL_PASSWORD)
            self.env = {
                "GLM_GATEWAY_REDIS_SENTINELS": self.sentinel.addresses,
                "GLM_GATEWAY_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
            }

    def master_port(self, keys_at: str) -> int:
        if self.cluster is not None:
            return self.cluster.owner(keys_at).port
        assert self.sentinel is not None
        return self.sentinel.master().port

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        if self.sentinel is not None:
            self.sentinel.close()


@pytest.fixture(scope="module", params=["sentinel", "cluster"])
def secured(request: pytest.FixtureRequest) -> Iterator[Secured]:
    group = Secured(request.param)
    yield group
    group.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


def _gateway(simulator: Proc, tmp_path: Path, group: Secured, password: str) -> tuple[Proc, str]:
    prefix = nonce()
    state = {"backend": "redis", "redis_timeout_ms": 300, "redis_prefix": prefix}
    cfg = config_copy(tmp_path, gateway_yaml(state=state))
    env = {**GATEWAY_ENV, **group.env, "GLM_GATEWAY_REDIS_PASSWORD": password}
    keys_at = "{" + prefix + "}" if group.mode == "cluster" else prefix
    return start_gateway(simulator.url, cfg, env), keys_at


async def _chat(gw: Proc, api_key: str) -> None:
    async with sdk_client(gw, api_key=api_key, timeout=30) as c:
        out = await c.chat.completions.create(
            model="glm-4.5-air", messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
        assert out.choices[0].message.content


async def _no_password_in(gw: Proc, http: aiohttp.ClientSession) -> None:
    texts = [gw.log_path.read_text()]
    for path in ("/readyz", "/metrics", "/dashboard/data", "/admin/keys"):
        async with http.get(gw.url + path, headers=AUTH) as r:
            texts.append(await r.text())
    for text in texts:
        assert DATA_PASSWORD not in text and SENTINEL_PASSWORD not in text


async def test_a_password_protected_group_holds_the_state_and_no_password_leaves(
    simulator: Proc, tmp_path: Path, secured: Secured, http: aiohttp.ClientSession
) -> None:
    gw, keys_at = _gateway(simulator, tmp_path, secured, DATA_PASSWORD)
    try:
        async with http.get(gw.url + "/readyz") as r:
            ready = await r.json()
        assert ready["status"] == "ready", ready
        assert ready["state"]["redis_mode"] == secured.mode
        async with http.post(gw.url + "/admin/keys", json={"name": "pw"}, headers=AUTH) as r:
            assert r.status == 201, await r.text()
            key = (await r.json())["key"]
        for _ in range(3):
            await _chat(gw, key)
        redis = Redis(port=secured.master_port(keys_at), password=DATA_PASSWORD)
        try:
            found = [k async for k in redis.scan_iter(match=f"{keys_at}:*", count=1000)]
        finally:
            await redis.aclose()
        assert any(b":keys:" in k for k in found), found  # the key lives in the secured Redis
        await _no_password_in(gw, http)
    finally:
        gw.stop()


async def test_a_wrong_password_serves_from_local_state_and_says_degraded(
    simulator: Proc, tmp_path: Path, secured: Secured, http: aiohttp.ClientSession
) -> None:
    gw, _ = _gateway(simulator, tmp_path, secured, "wrong-" + DATA_PASSWORD)
    try:
        await _chat(gw, GATEWAY_ENV["GLM_GATEWAY_MASTER_KEY"])
        async with http.get(gw.url + "/readyz") as r:
            ready = await r.json()
        assert ready["status"] == "degraded", ready
        log = gw.log_path.read_text()
        assert "redis" in log.lower()
        assert DATA_PASSWORD not in log and SENTINEL_PASSWORD not in log
    finally:
        gw.stop()
