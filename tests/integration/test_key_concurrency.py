"""A key's ``max_in_flight`` holds across two gateway processes sharing one real Redis.

Requests that hold a slot hang in the simulator until their client goes away, so the test
never races a clock: it reads the key's slot set in Redis to know how many are held.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.support.e2e import GATEWAY_ENV, directive, gateway_yaml, nonce
from tests.support.procs import Proc, config_copy, start_gateway
from tests.support.redis_server import RedisServer

LIMIT = 3


class Pair:
    def __init__(self, procs: list[Proc], redis: RedisServer, prefix: str) -> None:
        self.procs, self.redis, self.prefix = procs, redis, prefix


@pytest.fixture(scope="module")
def pair(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    redis = RedisServer()
    prefix = nonce()
    state = {"backend": "redis", "redis_timeout_ms": 2000, "redis_prefix": prefix}
    cfg = config_copy(tmp_path_factory.mktemp("mif"), gateway_yaml(state=state))
    env = {**GATEWAY_ENV, "GLM_GATEWAY_REDIS_URL": redis.url}
    procs: list[Proc] = []
    try:
        for _ in range(2):
            procs.append(start_gateway(simulator.url, cfg, env=env))
        yield Pair(procs, redis, prefix)
    finally:
        for p in procs:
            p.stop()
        redis.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


def cli(*args: str) -> dict[str, Any]:
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


async def chat(
    http: aiohttp.ClientSession, gw: Proc, key: str, text: str
) -> tuple[int, dict[str, str], Any]:
    body = {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(gw.url + "/v1/chat/completions", json=body, headers=headers) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.json()


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 30) -> None:
    end = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


async def test_max_in_flight_holds_across_both_replicas(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    a, b = pair.procs
    created = cli("--url", a.url, "create", "--name", "mif", "--max-in-flight", str(LIMIT))
    assert created["max_in_flight"] == LIMIT
    assert cli("--url", b.url, "show", created["id"])["max_in_flight"] == LIMIT
    key = created["key"]
    slots = f"{pair.prefix}:if:{created['id']}"
    r = Redis.from_url(pair.redis.url)

    async def held(n: int) -> None:
        async def check() -> bool:
            return int(await r.zcard(slots)) == n

        await until(check, f"{n} slots held in Redis")

    # Eight requests at once through both replicas: three take the slots and hang there, the
    # other five are refused at once, whichever replica they came through.
    hanging = "slow " + directive({"hang": True}, nonce())
    burst = [asyncio.create_task(chat(http, pair.procs[i % 2], key, hanging)) for i in range(8)]
    try:
        await until(lambda: _true(sum(t.done() for t in burst) >= 8 - LIMIT), "the refusals")
        refused = [t.result() for t in burst if t.done()]
        assert len(refused) == 8 - LIMIT
        for status, headers, body in refused:
            assert status == 429, body
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert f"its limit is {LIMIT} running at once" in body["error"]["message"]
            assert headers["retry-after"] == "1"
        await held(LIMIT)
        holders = [t for t in burst if not t.done()]
        assert len(holders) == LIMIT
        for gw in (a, b):  # full on both replicas
            status, _, body = await chat(http, gw, key, "one more")
            assert status == 429 and "in flight" in body["error"]["message"]

        holders[0].cancel()  # its client goes away: the gateway ends it and frees its slot
        await held(LIMIT - 1)
        status, _, _ = await chat(http, b, key, "fits again")
        assert status == 200
    finally:
        for t in burst:
            t.cancel()
        await asyncio.gather(*burst, return_exceptions=True)
    await held(0)

    # Slow requests that finish: never more than the limit at once, and the slots come back.
    slow = "slow " + directive({"latency_ms": 300}, nonce())
    answers = await asyncio.gather(
        *(chat(http, pair.procs[i % 2], key, slow) for i in range(LIMIT))
    )
    assert [s for s, _, _ in answers] == [200] * LIMIT
    await held(0)
    await r.aclose()


async def _true(value: bool) -> bool:
    return value
