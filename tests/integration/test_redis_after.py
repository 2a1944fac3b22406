"""``RedisState.after`` sends its report and returns: the request never waits for Redis to
settle it. Nothing is lost by that: this replica's later calls see the report, a report that
cannot be delivered is journaled, and closing the backend delivers what is on its way.

A real ``redis-server`` on loopback (``tests.support.redis_server``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import DeploymentAsk, KeyAsk, Lease, Outcome, Report, Ticket
from gateway.state.redis import RedisState
from gateway.tenancy.keys import KeyRecord, period_window
from tests.support.e2e import nonce
from tests.support.redis_server import RedisServer

DEP = DeploymentAsk("zai/glm-4.7")


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


async def _keyed(state: RedisState, now: float) -> tuple[KeyAsk, str]:
    await state.put_key(KeyRecord("k", "t", "0" * 64, "h", now))
    period, end = period_window("day", now)
    return KeyAsk("k", None, None, 10**6, period, end, 10), period


def _charge(lease: Lease | None, cost: int) -> Report:
    outcome = Outcome(DEP.target_id, True, 0.01)
    return Report((outcome,), (DEP.target_id,), lease, DEP.target_id, 10, cost)


async def test_after_returns_without_suspending_the_request(redis: RedisServer) -> None:
    state = RedisState(redis.url, BreakerConfig(), prefix=nonce())
    try:
        now = time.time()
        ask, period = await _keyed(state, now)
        view = await state.before(Ticket((DEP,), 10, ask), now)
        sending = state.after(_charge(view.lease, 70), now)
        with pytest.raises(StopIteration):  # done at its first step: no await on Redis
            sending.send(None)
        # a read off the hot path waits for the reports sent before it
        assert await state.key_spend("k", period) == 70
    finally:
        await state.aclose()


async def test_the_next_before_sees_a_report_sent_in_the_same_turn(redis: RedisServer) -> None:
    state = RedisState(redis.url, BreakerConfig(), prefix=nonce())
    try:
        now = time.time()
        ask, _ = await _keyed(state, now)
        view = await state.before(Ticket((DEP,), 10, ask), now)
        await state.after(_charge(view.lease, 300), now)
        seen = await state.before(Ticket((DEP,), 1, ask, reserve=False), now)
        assert seen.verdict is not None and seen.verdict.spend_micros == 300
    finally:
        await state.aclose()


async def test_closing_delivers_the_reports_on_their_way(redis: RedisServer) -> None:
    prefix = nonce()
    state = RedisState(redis.url, BreakerConfig(), prefix=prefix)
    now = time.time()
    ask, period = await _keyed(state, now)
    views = [await state.before(Ticket((DEP,), 10, ask), now) for _ in range(5)]
    for view in views:
        await state.after(_charge(view.lease, 11), now)
    await state.aclose()
    again = RedisState(redis.url, BreakerConfig(), prefix=prefix)
    try:
        assert await again.key_spend("k", period) == 55
    finally:
        await again.aclose()


async def test_a_report_redis_never_got_is_journaled_and_replayed() -> None:
    server = RedisServer()
    state = RedisState(server.url, BreakerConfig(), timeout_ms=300, prefix=nonce())
    try:
        now = time.time()
        ask, period = await _keyed(state, now)
        view = await state.before(Ticket((DEP,), 10, ask), now)
        server.stop()
        await state.after(_charge(view.lease, 40), now)  # returns; the send fails after
        for _ in range(200):
            if state.degraded:
                break
            await _tick()
        assert state.degraded and len(state._outage.journal) == 1
        server.start()
        for _ in range(500):
            if not state.degraded:
                break
            await _tick()
        assert not state.degraded
        assert await state.key_spend("k", period) == 40  # came back empty: the replay only
    finally:
        await state.aclose()
        server.close()


async def _tick() -> None:
    await asyncio.sleep(0.01)
