"""Chaos: the Redis master killed under load, with Redis Cluster and with Sentinel.

Two gateway replicas share a three-master Redis Cluster (one replica per master) or a Sentinel
group (master, one replica, three sentinels). Eight real openai-SDK clients, half streaming,
load both; mid-load the master that holds the gateway's keys is SIGKILLed and its replica takes
over. Every request must succeed; both replicas must go through a resync and say ``ready``
again, with the Redis mode on ``/readyz``. Afterwards, against the promoted master, with keys
created before the kill and used only after it: a key's rpm is exact across the two replicas,
a budget is never overspent and its spend is exact to the micro-dollar, and a breaker tripped
through one replica is open in the other. Bounded: a request cap, a test timeout; every wait
polls for a state, nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from redis.asyncio import Redis

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import DeploymentAsk, KeyAsk, Outcome, Report, Ticket
from gateway.state.redis import RedisState
from gateway.state.redis_target import RedisTarget, parse_nodes
from gateway.tenancy.keys import MICROS, KeyRecord, period_window
from tests.chaos.test_redis_chaos import Load, admin_key, ready, until
from tests.support.e2e import AUTH, GATEWAY_ENV, directive, gateway_yaml, nonce, sdk_client
from tests.support.procs import Proc, config_copy, start_gateway
from tests.support.redis_ha import RedisClusterGroup, SentinelGroup
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(90)]

PRICED = {"X-GLM-Providers": "zai", "X-GLM-Fallback": "none"}
"""With model glm-4-32b: zai's deployment only, $0.10 in and out per 1M tokens."""
PRICE_IN, PRICE_OUT = 0.10, 0.10


class Group:
    """One Redis group (shared by this module's tests of its mode) and what a gateway needs
    to reach it; each test has a key prefix of its own."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        if mode == "cluster":
            self.cluster = RedisClusterGroup()
            self.env = {"GLM_GATEWAY_REDIS_CLUSTER_NODES": self.cluster.seeds}
        else:
            self.sentinel = SentinelGroup()
            self.env = {"GLM_GATEWAY_REDIS_SENTINELS": self.sentinel.addresses}
        self.new_prefix()

    def new_prefix(self) -> None:
        self.prefix = nonce()
        # Cluster: the hash tag, every key in one slot
        self.keys_at = "{" + self.prefix + "}" if self.mode == "cluster" else self.prefix

    def revive(self) -> None:
        """A master killed by an earlier test back, as a replica."""
        if self.mode == "cluster":
            self.cluster.revive()
        else:
            self.sentinel.revive()

    def master(self) -> RedisServer:
        if self.mode == "cluster":
            return self.cluster.owner(self.keys_at)
        return self.sentinel.master()

    def fail_master(self) -> RedisServer:
        if self.mode == "cluster":
            return self.cluster.fail_master(self.keys_at)
        return self.sentinel.fail_master()

    def switch_master(self) -> RedisServer:
        if self.mode == "cluster":
            return self.cluster.switch_master(self.keys_at)
        return self.sentinel.switch_master()

    def target(self) -> RedisTarget:
        if self.mode == "cluster":
            return RedisTarget("cluster", nodes=parse_nodes(self.cluster.seeds, "nodes"))
        return RedisTarget("sentinel", nodes=parse_nodes(self.sentinel.addresses, "nodes"))

    def close(self) -> None:
        if self.mode == "cluster":
            self.cluster.close()
        else:
            self.sentinel.close()


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def redis_group(request: pytest.FixtureRequest) -> Iterator[Group]:
    g = Group(request.param)
    yield g
    g.close()


@pytest.fixture
def group(redis_group: Group) -> Group:
    redis_group.revive()
    redis_group.new_prefix()
    return redis_group


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def test_a_graceful_failover_moves_the_shared_state_to_the_new_master(group: Group) -> None:
    """``CLUSTER FAILOVER`` / ``SENTINEL FAILOVER``: the old master stays up as a replica (it
    refuses writes, or the slot moved). Calls keep being answered throughout (from local state
    for a moment), then the backend follows the new master and counts there, exactly."""
    state = RedisState(group.target(), BreakerConfig(), timeout_ms=300, prefix=group.prefix)
    dep = DeploymentAsk("zai/glm-4.7")
    now = time.time()
    period, end = period_window("day", now)
    ask = KeyAsk("k", None, None, 10**9, period, end, 5)
    calls = {"shared": 0, "local": 0}
    stop = asyncio.Event()

    async def request() -> bool:
        view = await state.before(Ticket((dep,), 10, ask), time.time())
        assert view.lease is not None and view.verdict is not None
        assert view.verdict.refused is None
        outcome = Outcome(dep.target_id, True, 0.01)
        report = Report((outcome,), (dep.target_id,), view.lease, dep.target_id, 10, 1)
        await state.after(report, time.time())
        return view.lease.shared

    async def load() -> None:
        while not stop.is_set():
            calls["shared" if await request() else "local"] += 1
            await asyncio.sleep(0.002)

    try:
        await state.put_key(KeyRecord("k", "t", "0" * 64, "h", now))
        worker = asyncio.create_task(load())
        await until(_true(lambda: calls["shared"] >= 50), "50 shared calls")
        new = await asyncio.to_thread(group.switch_master)
        await until(_true(lambda: not state.degraded and calls["shared"] >= 100), "the resync")
        stop.set()
        await worker
        assert calls["local"] >= 1  # the switch was seen (and served locally meanwhile)
        before = await state.key_spend("k", period)
        for _ in range(20):
            assert await request()  # shared again
        assert await state.key_spend("k", period) == before + 20
        r = Redis(port=new.port)
        try:
            assert int(await r.get(f"{group.keys_at}:sp:k:{period}") or 0) == before + 20
        finally:
            await r.aclose()
    finally:
        stop.set()
        await state.aclose()


async def test_the_master_killed_under_load_fails_no_request_and_limits_stay_exact(
    simulator: Proc, tmp_path: Path, group: Group, http: aiohttp.ClientSession
) -> None:
    state = {"backend": "redis", "redis_timeout_ms": 100, "redis_prefix": group.prefix}
    cfg = config_copy(tmp_path, gateway_yaml(state=state, breaker={"failure_threshold": 2}))
    procs: list[Proc] = []
    try:
        for _ in range(2):
            procs.append(start_gateway(simulator.url, cfg, env={**GATEWAY_ENV, **group.env}))
        await _scenario(procs, group, http)
    finally:
        for p in procs:
            p.stop()


async def _scenario(procs: list[Proc], group: Group, http: aiohttp.ClientSession) -> None:
    a, b = procs
    async with http.get(a.url + "/readyz") as r:
        assert (await r.json())["state"]["redis_mode"] == group.mode
    load_key = await admin_key(http, a, {"name": "load", "rpm": 100_000, "max_in_flight": 64})
    # Created before the kill, used only after it: on the promoted master.
    rpm_key = await admin_key(http, b, {"name": "rpm", "rpm": 5})
    budget_key = await admin_key(http, a, {"name": "budget", "budget_usd": 0.00004, "rpm": 1000})

    load = Load(procs, load_key["key"])
    load.start()
    try:
        await load.served(60)
        old = group.master()
        new = await asyncio.to_thread(group.fail_master)  # blocking waits off the loop
        assert new.port != old.port

        async def resynced() -> bool:
            return all([await _resyncs(http, p) >= 1 and await ready(http, p) == "ready"
                        for p in procs])  # fmt: skip

        await until(resynced, "a resync and /readyz ready on both replicas", limit=30)
        await load.served(60)
    finally:
        await load.stop()
    assert load.done >= 120 and not load.failures, load.failures[:5]

    r = Redis(port=new.port)
    try:
        assert await r.sismember(f"{group.keys_at}:keys", rpm_key["id"])  # on the new master
        await _rpm_is_exact(procs, rpm_key["key"])
        await _budget_is_exact(procs, budget_key, http)
        await _breaker_is_shared(procs, http)
        assert await r.exists(f"{group.keys_at}:cb:zai/glm-4.6")
    finally:
        await r.aclose()


async def _resyncs(http: aiohttp.ClientSession, gw: Proc) -> float:
    async with http.get(gw.url + "/metrics") as r:
        text = await r.text()
    name = "glm_gateway_state_resyncs_total"
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def _rpm_is_exact(procs: list[Proc], key: str) -> None:
    """rpm 5: three through one replica and two through the other, then the sixth refused."""
    a, b = procs
    async with sdk_client(a, key) as ca, sdk_client(b, key) as cb:
        for c in (ca, cb, ca, cb, ca):
            await c.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "rpm"}], max_tokens=8
            )
        with pytest.raises(openai.RateLimitError) as caught:
            await cb.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "sixth"}], max_tokens=8
            )
    assert "5 requests per minute" in str(caught.value)


async def _budget_is_exact(
    procs: list[Proc], created: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    """Alternating replicas until the budget refuses: spend equals the usage, to the µ$."""
    body = {"model": "glm-4-32b", "max_tokens": 16, "messages": [{"role": "user", "content": "$"}]}
    headers = {"Authorization": f"Bearer {created['key']}", **PRICED}
    charged, refused = 0, None
    for i in range(80):
        url = procs[i % 2].url + "/v1/chat/completions"
        async with http.post(url, json=body, headers=headers) as r:
            answer = await r.json()
            if r.status == 429:
                refused = answer
                break
            assert r.status == 200, answer
        usage = answer["usage"]
        charged += math.ceil(
            usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT
        )
    assert refused is not None and refused["error"]["type"] == "insufficient_quota"
    async with http.get(procs[1].url + f"/admin/keys/{created['id']}", headers=AUTH) as r:
        spent = (await r.json())["spend_usd"]
    assert round(spent * MICROS) == charged
    assert charged <= 0.00004 * MICROS


async def _breaker_is_shared(procs: list[Proc], http: aiohttp.ClientSession) -> None:
    """Tripped through one replica (failure_threshold 2): open in the other."""
    a, b = procs
    fail = directive({"match": {"provider": "zai"}, "status": 500}, nonce())
    body = {"model": "glm-4.6", "max_tokens": 8, "messages": [{"role": "user", "content": fail}]}
    async with http.post(
        a.url + "/v1/chat/completions", json=body, headers={**AUTH, **PRICED}
    ) as r:
        assert r.status == 502 and r.headers["x-glm-attempts"] == "2", await r.text()
    ask = {"model": "glm-4.6", "messages": [{"role": "user", "content": "hi"}]}
    seen: list[Any] = []

    async def open_in_b() -> bool:
        # a state call past redis_timeout_ms (a loaded machine) is answered from b's own
        # view, which never saw the trip: the next one reads the shared circuit again
        async with http.post(b.url + "/v1/route", json=ask, headers={**AUTH, **PRICED}) as r:
            rejected = (await r.json())["rejected"]
        seen[:] = [rejected]
        zai = [x for x in rejected if x["provider"] == "zai"]
        return bool(zai) and any("circuit open" in reason for reason in zai[0]["reasons"])

    try:
        await until(open_in_b, "the circuit tripped through a to read open in b", limit=10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; b's last rejections: {seen}") from None


def _true(check: Any) -> Any:
    async def wrapped() -> bool:
        return bool(check())

    return wrapped
