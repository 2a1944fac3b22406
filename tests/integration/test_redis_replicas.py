"""Two gateway processes on one real Redis: shared breakers, exact limits and budgets, and
Redis going away under load without failing a request.

Every server is real and on loopback: the simulator (session fixture), ``redis-server``
processes started here, and gateway replicas as child processes (``glm-gateway serve``).
Nothing asserts on timing; waits poll for a state with a generous bound.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import DeploymentAsk, KeyAsk, Outcome, Report, Ticket
from gateway.state.redis import RedisState
from gateway.tenancy.keys import MICROS, KeyRecord, period_window
from tests.support.e2e import AUTH, GATEWAY_ENV, directive, nonce
from tests.support.procs import Proc
from tests.support.redis_server import RedisServer
from tests.support.topology import redis_replicas

PRICED = {"X-GLM-Providers": "zai", "X-GLM-Fallback": "none"}
"""With model glm-4-32b: zai's deployment only, $0.10 in and out per 1M tokens. Not a thinking
model, so the simulator never bills more than ``max_tokens`` (reasoning is outside it)."""
PRICE_IN, PRICE_OUT = 0.10, 0.10


def replicas(
    sim: Proc, redis: RedisServer, tmp: Path, *, timeout_ms: int, n: int = 2
) -> list[Proc]:
    breaker = {"failure_threshold": 2}
    return redis_replicas(sim, redis.url, tmp, n=n, timeout_ms=timeout_ms, breaker=breaker)


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pair(
    simulator: Proc, shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Proc]]:
    # A generous Redis timeout: on a busy 2-core machine a 50 ms budget may be missed now and
    # then, and a replica serving from local state would make "exactly N" tests meaningless.
    procs = replicas(simulator, shared_redis, tmp_path_factory.mktemp("pair"), timeout_ms=2000)
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: Any) -> None:
        self.status, self.headers, self.body = status, headers, body


async def chat(
    http: aiohttp.ClientSession,
    gw: Proc,
    key: str,
    text: str = "hi",
    *,
    model: str = "auto",
    headers: dict[str, str] | None = None,
) -> Answer:
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
    hdrs = {"Authorization": f"Bearer {key}", **(headers or {})}
    async with http.post(gw.url + "/v1/chat/completions", json=body, headers=hdrs) as r:
        return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, await r.json())


async def admin(
    http: aiohttp.ClientSession, gw: Proc, method: str, path: str, body: Any = None
) -> Any:
    async with http.request(method, gw.url + path, json=body, headers=AUTH) as r:
        assert r.status in (200, 201), await r.text()
        return await r.json()


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60) -> None:
    end = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


# --- shared state across replicas --------------------------------------------------------------


async def test_a_breaker_tripped_through_one_replica_is_open_in_the_other(
    pair: list[Proc], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    fail = directive({"match": {"provider": "zai"}, "status": 500}, nonce())
    tripped = await chat(http, a, "sk-test-master", f"hi {fail}", model="glm-4.6", headers=PRICED)
    assert tripped.status == 502 and tripped.headers["x-glm-attempts"] == "2"

    async with http.post(
        b.url + "/v1/route",
        json={"model": "glm-4.6", "messages": [{"role": "user", "content": "hi"}]},
        headers={**AUTH, **PRICED},
    ) as r:
        explained = await r.json()
    zai = [x for x in explained["rejected"] if x["provider"] == "zai"]
    assert any("circuit open" in reason for reason in zai[0]["reasons"]), explained["rejected"]

    refused = await chat(http, b, "sk-test-master", model="glm-4.6", headers=PRICED)
    assert refused.status == 503, refused.body
    assert refused.body["error"]["code"] == "no_available_deployment"
    assert int(refused.headers["retry-after"]) >= 1
    assert "zai/glm-4.6 (circuit open" in refused.body["error"]["message"]


async def test_a_key_rpm_holds_exactly_across_both_replicas(
    pair: list[Proc], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    created = await admin(http, a, "POST", "/admin/keys", {"name": "rpm", "rpm": 10})
    answers = await asyncio.gather(*(chat(http, pair[i % 2], created["key"]) for i in range(40)))
    statuses = sorted(x.status for x in answers)
    assert statuses == [200] * 10 + [429] * 30
    ok = [x for x in answers if x.status == 200]
    assert sorted(int(x.headers["x-ratelimit-remaining-requests"]) for x in ok) == list(range(10))
    assert {x.headers["x-ratelimit-limit-requests"] for x in answers} == {"10"}
    for x in answers:
        if x.status == 429:
            assert 1 <= int(x.headers["retry-after"]) <= 60
            assert x.headers["x-ratelimit-remaining-requests"] == "0"
            assert x.body["error"]["code"] == "rate_limit_exceeded"
    assert {x.headers["x-glm-variant"] for x in ok} != {"none"}
    listed = await admin(http, b, "GET", f"/admin/keys/{created['id']}")
    assert listed["rpm"] == 10 and "key" not in listed and "hash" not in listed


async def test_a_budget_is_never_overspent_across_both_replicas(
    pair: list[Proc], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    budget = 0.00004  # about a dozen reservations of ~3 micro-USD
    created = await admin(
        http, a, "POST", "/admin/keys", {"name": "budget", "budget_usd": budget, "rpm": 1000}
    )
    key = created["key"]
    burst = await asyncio.gather(
        *(chat(http, pair[i % 2], key, model="glm-4-32b", headers=PRICED) for i in range(30))
    )
    answers = list(burst)
    assert any(x.status == 429 for x in burst)
    for i in range(60):  # then one at a time until the budget refuses
        answers.append(await chat(http, pair[i % 2], key, model="glm-4-32b", headers=PRICED))
        if answers[-1].status == 429:
            break
    ok = [x for x in answers if x.status == 200]
    refused = [x for x in answers if x.status == 429]
    assert ok and refused and {x.status for x in answers} == {200, 429}
    assert refused[-1].body["error"]["type"] == "insufficient_quota"
    assert "budget is spent" in refused[-1].body["error"]["message"]
    charged = sum(
        math.ceil(
            x.body["usage"]["prompt_tokens"] * PRICE_IN
            + x.body["usage"]["completion_tokens"] * PRICE_OUT
        )
        for x in ok
    )
    spent = await admin(http, b, "GET", f"/admin/keys/{created['id']}")
    assert round(spent["spend_usd"] * MICROS) == charged
    assert charged <= budget * MICROS


async def test_revoking_on_one_replica_locks_the_key_out_of_the_other(
    pair: list[Proc], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    created = await admin(http, a, "POST", "/admin/keys", {"name": "revoke"})
    assert (await chat(http, b, created["key"])).status == 200
    await admin(http, a, "DELETE", f"/admin/keys/{created['id']}")
    gone = await chat(http, b, created["key"])
    assert gone.status == 401 and "revoked" in gone.body["error"]["message"]


# --- Redis going away ------------------------------------------------------------------------


async def _ready(http: aiohttp.ClientSession, gw: Proc) -> str:
    async with http.get(gw.url + "/readyz") as r:
        return str((await r.json())["status"])


async def _metric(http: aiohttp.ClientSession, gw: Proc, name: str) -> float:
    async with http.get(gw.url + "/metrics") as r:
        text = await r.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def test_redis_stopping_and_stalling_under_load_fails_no_request(
    simulator: Proc, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    redis = RedisServer()
    procs = replicas(simulator, redis, tmp_path, timeout_ms=100)
    try:
        await _outage(procs, redis, http)
    finally:
        for p in procs:
            p.stop()
        redis.close()


async def _outage(procs: list[Proc], redis: RedisServer, http: aiohttp.ClientSession) -> None:
    created = await admin(http, procs[0], "POST", "/admin/keys", {"name": "load", "rpm": 100000})
    statuses: list[int] = []
    stop = asyncio.Event()

    async def worker(i: int) -> None:
        while not stop.is_set():
            statuses.append((await chat(http, procs[i % 2], created["key"])).status)

    async def served(n: int) -> None:
        target = len(statuses) + n
        await until(lambda: _true(len(statuses) >= target), f"{n} more answers")

    async def all_say(word: str) -> None:
        async def check() -> bool:
            return all([await _ready(http, p) == word for p in procs])

        await until(check, f"/readyz {word} on both replicas")

    workers = [asyncio.create_task(worker(i)) for i in range(6)]
    try:
        await served(30)
        redis.stop()  # gone: connection refused
        await all_say("degraded")
        await served(60)
        redis.start()  # back, empty: the replicas replay and re-create the key
        await all_say("ready")
        await served(30)
        redis.pause()  # stalled: every call would wait, the timeout cuts it
        await all_say("degraded")
        await served(30)
        redis.resume()
        await all_say("ready")
        await served(30)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert len(statuses) >= 210 and set(statuses) == {200}, sorted(set(statuses))
    for p in procs:
        assert await _metric(http, p, "glm_gateway_state_errors_total") > 0
        assert await _metric(http, p, "glm_gateway_state_degraded ") == 0
        assert await _metric(http, p, "glm_gateway_state_resyncs_total") >= 2


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("outage", ["stop", "pause"])
async def test_spend_made_while_redis_was_away_reaches_redis(outage: str) -> None:
    redis = RedisServer()
    state = RedisState(redis.url, BreakerConfig(), timeout_ms=300, prefix=nonce())
    try:
        now = time.time()
        await state.put_key(KeyRecord("k", "t", "0" * 64, "h", now))
        period, end = period_window("day", now)
        ask = KeyAsk("k", None, None, 1000, period, end, 300)
        dep = DeploymentAsk("zai/glm-4.7")
        shared = await state.before(Ticket((dep,), 10, ask), now)
        assert shared.lease is not None and shared.lease.shared and not shared.degraded
        await state.after(Report((), (dep.target_id,), shared.lease, dep.target_id, 10, 200), now)
        # ``after`` only sends; a read off the hot path waits for what was sent before it
        assert await state.key_spend("k", period) == 200
        redis.stop() if outage == "stop" else redis.pause()
        local = await state.before(Ticket((dep,), 10, ask), now + 1)
        assert local.degraded and local.lease is not None and not local.lease.shared
        # Locally the budget is what is left of the last shared figure it saw (300 held):
        # 700, so one more 300 reservation fits and a third does not.
        assert (await state.before(Ticket((dep,), 10, ask), now + 1)).lease is not None
        over = await state.before(Ticket((dep,), 10, ask), now + 1)
        assert over.verdict is not None and over.verdict.refused == "budget"
        outcome = Outcome(dep.target_id, True, 0.1)
        charge = Report((outcome,), (dep.target_id,), local.lease, dep.target_id, 10, 250)
        await state.after(charge, now + 2)
        redis.start() if outage == "stop" else redis.resume()
        await until(lambda: _true(not state.degraded), "the resync")
        # Paused, the server kept its data: 200 before + 250 while away. Stopped, it came back
        # empty (no persistence): only the replayed 250, and the key record was re-created.
        assert await state.key_spend("k", period) == (250 if outage == "stop" else 450)
        assert await state.get_key("k") is not None
        (health,) = await state.health(now + 3)
        assert health.target_id == dep.target_id and health.requests >= 1
    finally:
        await state.aclose()
        redis.close()


async def test_a_call_that_lands_after_its_timeout_is_reconciled_not_lost() -> None:
    redis = RedisServer()
    state = RedisState(redis.url, BreakerConfig(), timeout_ms=50, prefix=nonce())
    try:
        now = time.time()
        await state.put_key(KeyRecord("k", "t", "0" * 64, "h", now))
        period, end = period_window("day", now)
        ask = KeyAsk("k", None, 1000, 10**6, period, end, 5)
        dep = DeploymentAsk("zai/glm-4.7")
        redis.pause()  # a stall shorter than the socket timeout: late, not down
        late = await state.before(Ticket((dep,), 600, ask), now)
        assert late.degraded and late.lease is not None and not late.lease.shared
        charge = Report((), (dep.target_id,), late.lease, dep.target_id, 600, 40)
        await state.after(charge, now + 1)
        redis.resume()

        async def settled() -> bool:
            view = await state.before(Ticket((dep,), 1, ask, reserve=False), now + 2)
            v = view.verdict
            spent = await state.key_spend("k", period)
            return v is not None and (v.tpm_remaining, v.reserved_micros, spent) == (399, 5, 40)

        # The late before's 600 tokens and 5 micro-USD are given back; the late after's 600
        # tokens and 40 micro-USD count once: 1000 - 600 - 1 tokens left, only this look's
        # 5 micro-USD held.
        await until(settled, "the late calls to be reconciled")
        assert not state.degraded
    finally:
        await state.aclose()
        redis.close()


def _cli(*args: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GLM_GATEWAY_MASTER_KEY": GATEWAY_ENV["GLM_GATEWAY_MASTER_KEY"]},
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout)
    return out


async def test_the_keys_command_manages_keys_through_any_replica(
    pair: list[Proc], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    created = _cli("--url", a.url, "create", "--name", "cli", "--rpm", "3", "--budget", "1.5")
    assert created["rpm"] == 3 and created["budget_usd"] == 1.5 and created["key"]
    assert (await chat(http, b, created["key"])).status == 200
    listed = _cli("--url", b.url, "list")
    assert created["id"] in [k["id"] for k in listed["data"]]
    assert created["key"] not in json.dumps(listed)
    assert _cli("--url", b.url, "revoke", created["id"])["revoked_at"] is not None
    assert (await chat(http, a, created["key"])).status == 401
