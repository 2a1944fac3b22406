"""Chaos: Redis killed (SIGKILL) and restarted under load, two replicas in front of it.

Eight real openai-SDK clients, half of their requests streaming, run against two gateway
processes sharing one ``redis-server``. Mid-load Redis is killed without warning and later
started again, empty, on the same port. Every request must still succeed; ``/readyz`` must say
``degraded`` and then ``ready`` again; afterwards a key's ``max_in_flight`` and ``rpm`` must
still answer as configured. Bounded: a fixed request budget and a 60 s test timeout; every wait
polls for a state, nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from redis.asyncio import Redis

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import DeploymentAsk, KeyAsk, Report, Ticket
from gateway.state.redis import RedisState
from gateway.tenancy.keys import KeyRecord, period_window
from tests.support.e2e import AUTH, GATEWAY_ENV, directive, gateway_yaml, nonce, sdk_client
from tests.support.procs import Proc, config_copy, start_gateway
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

CLIENTS = 8
MAX_REQUESTS = 600
"""Hard cap on the load, whatever happens to the phases."""


def kill(redis: RedisServer) -> None:
    """SIGKILL: no shutdown, sockets reset under the replicas' feet."""
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGKILL)
    redis.proc.wait(10)
    redis.proc = None


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 20) -> None:
    end = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


async def ready(http: aiohttp.ClientSession, gw: Proc) -> str:
    async with http.get(gw.url + "/readyz") as r:
        return str((await r.json())["status"])


async def admin_key(http: aiohttp.ClientSession, gw: Proc, spec: dict[str, Any]) -> dict[str, Any]:
    async with http.post(gw.url + "/admin/keys", json=spec, headers=AUTH) as r:
        assert r.status == 201, await r.text()
        out: dict[str, Any] = await r.json()
        return out


async def one_request(client: openai.AsyncOpenAI, i: int) -> None:
    """One chat completion, streamed when ``i`` is odd; raises unless it fully succeeded."""
    messages: Any = [{"role": "user", "content": f"chaos {i}"}]
    if i % 2:
        stream = await client.chat.completions.create(
            model="auto", messages=messages, max_tokens=16, stream=True
        )
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        assert text, "a stream with no content"
    else:
        answer = await client.chat.completions.create(
            model="auto", messages=messages, max_tokens=16
        )
        assert answer.choices[0].message.content


class Load:
    """``CLIENTS`` SDK clients spread over the replicas, each sending one request at a time."""

    def __init__(self, procs: list[Proc], key: str) -> None:
        self.clients = [sdk_client(procs[i % len(procs)], key, timeout=30) for i in range(CLIENTS)]
        self.done = 0
        self.failures: list[str] = []
        self._next = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(c)) for c in self.clients]

    async def _worker(self, client: openai.AsyncOpenAI) -> None:
        while not self._stop.is_set() and self._next < MAX_REQUESTS:
            i, self._next = self._next, self._next + 1
            try:
                await one_request(client, i)
            except Exception as exc:  # every failure is reported, none stops the load
                self.failures.append(f"request {i}: {type(exc).__name__}: {exc}"[:300])
            self.done += 1

    async def served(self, n: int) -> None:
        target = min(self.done + n, MAX_REQUESTS)

        async def check() -> bool:
            return self.done >= target

        await until(check, f"{n} more answers (done {self.done})", limit=30)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        for c in self.clients:
            await c.close()


async def test_redis_killed_and_restarted_under_load_fails_no_request(
    simulator: Proc, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    redis = RedisServer()
    prefix = nonce()
    state = {"backend": "redis", "redis_timeout_ms": 100, "redis_prefix": prefix}
    cfg = config_copy(tmp_path, gateway_yaml(state=state))
    env = {**GATEWAY_ENV, "GLM_GATEWAY_REDIS_URL": redis.url}
    procs: list[Proc] = []
    try:
        for _ in range(2):
            procs.append(start_gateway(simulator.url, cfg, env=env))
        await _scenario(procs, redis, prefix, http)
    finally:
        for p in procs:
            p.stop()
        redis.close()


async def _scenario(
    procs: list[Proc], redis: RedisServer, prefix: str, http: aiohttp.ClientSession
) -> None:
    a, b = procs
    load_key = await admin_key(http, a, {"name": "load", "rpm": 100_000, "max_in_flight": 64})
    # Created before the kill, used only after the restart: its record must be re-created.
    limits = await admin_key(http, b, {"name": "limits", "rpm": 5, "max_in_flight": 2})

    async def all_say(word: str) -> None:
        async def check() -> bool:
            return all([await ready(http, p) == word for p in procs])

        await until(check, f"/readyz {word} on both replicas")

    load = Load(procs, load_key["key"])
    load.start()
    try:
        await load.served(60)
        kill(redis)
        await all_say("degraded")
        await load.served(80)
        redis.start()  # same port, empty: replicas replay their journal, re-create the keys
        await all_say("ready")
        await load.served(60)
    finally:
        await load.stop()
    assert load.done >= 200 and not load.failures, load.failures[:5]
    await _limits_still_hold(procs, redis, prefix, limits, http)


async def _limits_still_hold(
    procs: list[Proc],
    redis: RedisServer,
    prefix: str,
    limits: dict[str, Any],
    http: aiohttp.ClientSession,
) -> None:
    """After the restart: max_in_flight 2 across replicas, then rpm 5 (2 already used)."""
    a, b = procs
    r = Redis.from_url(redis.url)
    slots = f"{prefix}:if:{limits['id']}"
    hanging = "hold " + directive({"hang": True}, nonce())
    async with sdk_client(a, limits["key"]) as ca, sdk_client(b, limits["key"]) as cb:
        holders = [
            asyncio.create_task(
                c.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": hanging}], max_tokens=8
                )
            )
            for c in (ca, cb)
        ]
        try:

            async def both_held() -> bool:
                return int(await r.zcard(slots)) == 2

            await until(both_held, "two slots held in the restarted Redis")
            with pytest.raises(openai.RateLimitError) as caught:
                await cb.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "third"}], max_tokens=8
                )
            assert caught.value.response.headers["retry-after"] == "1"
            assert "its limit is 2 running at once" in str(caught.value)
        finally:
            for t in holders:
                t.cancel()
            await asyncio.gather(*holders, return_exceptions=True)

        async def freed() -> bool:
            return int(await r.zcard(slots)) == 0

        await until(freed, "the slots to be released")
        for c in (ca, cb, ca):  # 2 counted by the holders, 3 more fit in the minute
            await c.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "rpm"}], max_tokens=8
            )
        with pytest.raises(openai.RateLimitError) as caught:
            await cb.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "sixth"}], max_tokens=8
            )
        assert "5 requests per minute" in str(caught.value)
        assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    await r.aclose()


async def test_max_in_flight_is_counted_locally_while_redis_is_down() -> None:
    """Degraded, each replica counts its own requests in flight against the key's limit."""
    redis = RedisServer()
    state = RedisState(redis.url, BreakerConfig(), timeout_ms=300, prefix=nonce())
    try:
        now = time.time()
        await state.put_key(KeyRecord("k", "t", "0" * 64, "h", now, max_in_flight=1))
        period, end = period_window("day", now)
        dep = DeploymentAsk("zai/glm-4.7")

        def ask(slot: str) -> Ticket:
            return Ticket(
                (dep,), 1, KeyAsk("k", None, None, None, period, end, 0, None, 1, slot, 60)
            )

        shared = await state.before(ask("s1"), now)
        assert shared.lease is not None and shared.lease.shared and shared.lease.slot == "s1"
        kill(redis)
        local = await state.before(ask("s2"), now + 1)
        assert local.degraded and local.lease is not None and not local.lease.shared
        refused = await state.before(ask("s3"), now + 1)
        assert refused.verdict is not None and refused.verdict.refused == "concurrency"
        await state.after(Report((), (dep.target_id,), local.lease), now + 2)
        again = await state.before(ask("s4"), now + 2)
        assert again.verdict is not None and again.verdict.refused is None
        await state.after(Report((), (dep.target_id,), again.lease), now + 2)
        # the shared lease taken before the kill is settled too (journaled, replayed later)
        await state.after(Report((), (dep.target_id,), shared.lease), now + 2)
        redis.start()

        async def back() -> bool:
            return not state.degraded

        await until(back, "the resync")
        fresh = await state.before(ask("s5"), now + 3)
        assert fresh.verdict is not None and fresh.verdict.refused is None
        assert fresh.verdict.in_flight == 1 and fresh.lease is not None and fresh.lease.shared
    finally:
        await state.aclose()
        redis.close()
