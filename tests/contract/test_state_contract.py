"""The StateStore contract: every test runs on the in-memory and the Redis backend alike,
Redis as one server, as a three-master Cluster (keys hash-tagged into one slot) and behind
Sentinel.

Time is passed in (``now``), never read, so windows, cooldowns and leases are exact here.
Redis is a real ``redis-server`` started for this session on a free port.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.catalogue.schema import BreakerConfig
from gateway.routing import failures as fl
from gateway.state.base import (
    DeploymentAsk,
    FlightAsk,
    KeyAsk,
    Lease,
    Outcome,
    Report,
    StateStore,
    Ticket,
)
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.state.redis_target import RedisTarget, parse_nodes
from gateway.tenancy.keys import KeyRecord, period_window
from tests.support.redis_ha import RedisClusterGroup, SentinelGroup
from tests.support.redis_server import RedisServer

T0 = 1_900_000_000.0
CFG = BreakerConfig(
    failure_threshold=3,
    cooldown_s=10.0,
    max_cooldown_s=3600.0,
    error_rate=0.5,
    error_window_s=60,
    error_min_requests=10,
    probe_lease_s=5.0,
)
# Limits far above anything a test does: a deployment with limits of its own is counted.
A = DeploymentAsk("zai/glm-4.7", rpm=10**6, tpm=10**9)
B = DeploymentAsk("openrouter/glm-4.7", rpm=10**6, tpm=10**9)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterGroup]:
    """Three masters, no replicas: the keys' hash tag is what this suite checks here."""
    group = RedisClusterGroup(replicas=0)
    yield group
    group.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    group = SentinelGroup()
    yield group
    group.close()


@pytest.fixture(params=["memory", "redis", "redis-cluster", "redis-sentinel"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryState(CFG)
        return
    target: str | RedisTarget
    if request.param == "redis-cluster":
        nodes = request.getfixturevalue("redis_cluster").seeds
        target = RedisTarget("cluster", nodes=parse_nodes(nodes, "nodes"))
    elif request.param == "redis-sentinel":
        nodes = request.getfixturevalue("redis_sentinel").addresses
        target = RedisTarget("sentinel", nodes=parse_nodes(nodes, "nodes"))
    else:
        target = request.getfixturevalue("redis_server").url
    prefix = f"t{os.urandom(4).hex()}"
    state = RedisState(target, CFG, timeout_ms=2000, prefix=prefix)
    yield state
    assert not state.degraded, "the Redis backend fell back to local state during a test"
    await state.aclose()


def fail(tid: str = A.target_id, cooldown: float | None = None) -> Report:
    return Report(outcomes=(Outcome(tid, False, 0.1, "transient", cooldown),), attempts=(tid,))


def ok(tid: str = A.target_id, latency: float = 0.2) -> Report:
    return Report(outcomes=(Outcome(tid, True, latency),), attempts=(tid,))


async def trip(store: StateStore, at: float = T0) -> None:
    for _ in range(CFG.failure_threshold):
        await store.after(fail(), at)


def key(
    rpm: int | None = None,
    tpm: int | None = None,
    budget: int | None = None,
    cost: int = 0,
    cheap: int | None = None,
    kid: str = "k1",
    at: float = T0,
) -> KeyAsk:
    period, end = period_window("day", at)
    return KeyAsk(kid, rpm, tpm, budget, period, end, cost, cheap)


_slot_ids = itertools.count(1)


def busy(mif: int, hold: float = 300.0, kid: str = "k1", **limits: int) -> KeyAsk:
    """A key with ``max_in_flight``; each call is a new request (its own slot id)."""
    period, end = period_window("day", T0)
    return KeyAsk(kid, limits.get("rpm"), None, None, period, end, 0, None, mif,
                  f"slot-{next(_slot_ids)}", hold)  # fmt: skip


async def add_key(store: StateStore, kid: str = "k1", revoked: bool = False) -> None:
    await store.put_key(KeyRecord(kid, "test", "0" * 64, "sk-glm-…", T0, T0 if revoked else None))


# --- circuits --------------------------------------------------------------------------------


async def test_closed_circuits_let_requests_through(store: StateStore) -> None:
    view = await store.before(Ticket((A, B), 10), T0)
    assert view.open_circuits == {} and view.saturated == {}
    assert view.lease is not None and view.lease.deployment == A.target_id
    assert view.lease.probes == ()


async def test_a_deployment_without_limits_is_not_counted(store: StateStore) -> None:
    free = DeploymentAsk(A.target_id)  # no rpm/tpm of its own: no windows to keep
    view = await store.before(Ticket((free, B), 10), T0)
    assert view.lease is not None and view.lease.deployment is None
    await store.after(Report((), (), view.lease, None, 12), T0 + 1)
    # the same id with limits now: nothing was counted against it meanwhile
    tight = DeploymentAsk(A.target_id, rpm=1, tpm=10)
    again = await store.before(Ticket((tight,), 10), T0 + 2)
    assert again.saturated == {}
    assert again.lease is not None and again.lease.deployment == A.target_id


async def test_consecutive_failures_open_the_circuit_for_the_cooldown(store: StateStore) -> None:
    for _ in range(CFG.failure_threshold - 1):
        await store.after(fail(), T0)
    assert (await store.before(Ticket((A,), 1, reserve=False), T0)).open_circuits == {}
    await store.after(fail(), T0)
    view = await store.before(Ticket((A, B), 1), T0 + 4)
    assert view.open_circuits[A.target_id] == pytest.approx(6.0)
    assert view.lease is not None and view.lease.deployment == B.target_id


async def test_half_open_lets_exactly_one_probe_through(store: StateStore) -> None:
    await trip(store)
    first = await store.before(Ticket((A,), 1), T0 + 10.5)
    assert first.lease is not None and first.lease.probes == (A.target_id,)
    assert A.target_id not in first.open_circuits
    second = await store.before(Ticket((A,), 1), T0 + 11)
    assert second.open_circuits[A.target_id] == pytest.approx(4.5)
    assert second.lease is None
    health = {h.target_id: h for h in await store.health(T0 + 11)}
    assert health[A.target_id].state == "half_open"


async def test_a_successful_probe_closes_the_circuit(store: StateStore) -> None:
    await trip(store)
    await store.before(Ticket((A,), 1), T0 + 11)
    await store.after(ok(), T0 + 12)
    view = await store.before(Ticket((A,), 1), T0 + 12)
    assert view.open_circuits == {} and view.lease is not None and view.lease.probes == ()
    (h,) = await store.health(T0 + 12)
    assert (h.state, h.trips, h.consecutive_failures) == ("closed", 0, 0)


async def test_a_failed_probe_reopens_for_twice_as_long(store: StateStore) -> None:
    await trip(store)
    await store.before(Ticket((A,), 1), T0 + 11)
    await store.after(fail(), T0 + 12)
    view = await store.before(Ticket((A,), 1), T0 + 12)
    assert view.open_circuits[A.target_id] == pytest.approx(20.0)
    await store.before(Ticket((A,), 1), T0 + 33)
    await store.after(fail(), T0 + 33)
    view = await store.before(Ticket((A,), 1), T0 + 33)
    assert view.open_circuits[A.target_id] == pytest.approx(40.0)


async def test_an_unanswered_probe_passes_to_another_caller_after_its_lease(
    store: StateStore,
) -> None:
    await trip(store)
    await store.before(Ticket((A,), 1), T0 + 11)
    late = await store.before(Ticket((A,), 1), T0 + 11 + CFG.probe_lease_s + 0.1)
    assert late.lease is not None and late.lease.probes == (A.target_id,)


async def test_a_probe_the_request_did_not_use_is_released(store: StateStore) -> None:
    await trip(store)
    view = await store.before(Ticket((A, B), 1), T0 + 11)
    assert view.lease is not None and view.lease.probes == (A.target_id,)
    await store.after(Report((), (B.target_id,), view.lease), T0 + 11.5)
    again = await store.before(Ticket((A,), 1), T0 + 11.6)
    assert again.lease is not None and again.lease.probes == (A.target_id,)


async def test_open_until_holds_circuits_open_until_a_stated_time(store: StateStore) -> None:
    # a plan window the host says is spent: every deployment on that surface, until the reset
    await store.open_until((A.target_id, B.target_id), T0 + 7200.0, "quota", T0)
    view = await store.before(Ticket((A, B), 1), T0 + 100)
    assert view.open_circuits[A.target_id] == pytest.approx(7100.0)
    assert view.open_circuits[B.target_id] == pytest.approx(7100.0)
    assert view.lease is None
    health = {h.target_id: h for h in await store.health(T0 + 100)}
    assert (health[A.target_id].state, health[A.target_id].last_failure) == ("open", "quota")
    assert (health[A.target_id].requests, health[A.target_id].failures) == (0, 0)
    # then half-open: one probe, whose success closes it
    probe = await store.before(Ticket((A,), 1), T0 + 7201)
    assert probe.lease is not None and probe.lease.probes == (A.target_id,)
    await store.after(ok(), T0 + 7202)
    assert (await store.before(Ticket((A,), 1), T0 + 7203)).open_circuits == {}


async def test_open_until_never_shortens_an_open_circuit(store: StateStore) -> None:
    await store.after(fail(cooldown=600.0), T0)
    await store.open_until((A.target_id,), T0 + 60.0, "quota", T0)
    await store.open_until((B.target_id,), T0 - 1.0, "quota", T0)  # past: nothing
    view = await store.before(Ticket((A, B), 1), T0 + 1)
    assert view.open_circuits == {A.target_id: pytest.approx(599.0)}


async def test_an_explicit_cooldown_opens_at_once_and_is_capped(store: StateStore) -> None:
    await store.after(fail(cooldown=42.0), T0)
    await store.after(fail(B.target_id, cooldown=1e9), T0)
    view = await store.before(Ticket((A, B), 1, reserve=False), T0)
    assert view.open_circuits[A.target_id] == pytest.approx(42.0)
    assert view.open_circuits[B.target_id] == pytest.approx(CFG.max_explicit_cooldown_s)


async def test_a_quota_reset_hours_away_keeps_the_circuit_open_until_then(
    store: StateStore,
) -> None:
    """A stated reset (GLM 1308) is honoured past the breaker's own cooldown cap."""
    five_hours = 5 * 3600.0
    assert five_hours > CFG.max_cooldown_s
    await store.after(fail(cooldown=five_hours), T0)
    view = await store.before(Ticket((A, B), 1, reserve=False), T0 + 4 * 3600)
    assert view.open_circuits[A.target_id] == pytest.approx(3600.0)


async def test_retry_after_and_glm_quota_reset_set_the_cooldown(store: StateStore) -> None:
    limited = fl.classify_response(429, {"Retry-After": "7"}, b"{}", now=T0)
    reset = b'{"error":{"code":"1308","message":"Limit reached; reset at 2030-03-18 02:16:40"}}'
    quota = fl.classify_response(429, {}, reset, now=T0)
    for tid, failure in ((A.target_id, limited), (B.target_id, quota)):
        d = fl.decide(failure, attempt_on_target=1, transient_retries=1)
        await store.after(Report((Outcome(tid, False, 0.1, failure.cls.value, d.cooldown_s),)), T0)
    view = await store.before(Ticket((A, B), 1, reserve=False), T0)
    assert view.open_circuits[A.target_id] == pytest.approx(7.0)
    assert view.open_circuits[B.target_id] == pytest.approx(1800.0, abs=1)


async def test_failures_in_flight_when_it_opened_do_not_trip_it_again(store: StateStore) -> None:
    await trip(store)
    for _ in range(5):
        await store.after(fail(), T0 + 1)
    await store.after(ok(), T0 + 2)
    view = await store.before(Ticket((A,), 1, reserve=False), T0 + 2)
    assert view.open_circuits[A.target_id] == pytest.approx(8.0)
    (h,) = await store.health(T0 + 2)
    assert (h.state, h.trips) == ("open", 1)


async def test_the_error_rate_in_the_window_opens_the_circuit(store: StateStore) -> None:
    for i in range(CFG.error_min_requests - 1):
        await store.after(fail() if i % 2 else ok(), T0 + i)
    assert (await store.before(Ticket((A,), 1, reserve=False), T0 + 9)).open_circuits == {}
    await store.after(fail(), T0 + 9)
    view = await store.before(Ticket((A,), 1, reserve=False), T0 + 9)
    assert view.open_circuits[A.target_id] == pytest.approx(CFG.cooldown_s)


async def test_old_failures_leave_the_error_window(store: StateStore) -> None:
    for i in range(CFG.error_min_requests - 1):
        await store.after(fail() if i % 2 else ok(), T0 + i)
    await store.after(fail(), T0 + 200)
    assert (await store.before(Ticket((A,), 1, reserve=False), T0 + 200)).open_circuits == {}


async def test_health_shows_state_latency_and_error_rate(store: StateStore) -> None:
    await store.after(ok(latency=1.0), T0)
    await store.after(ok(latency=2.0), T0 + 1)
    await store.after(fail(), T0 + 2)
    (h,) = await store.health(T0 + 3)
    assert h.target_id == A.target_id and h.state == "closed"
    assert h.latency_s == pytest.approx(1.2)
    assert (h.requests, h.failures, h.last_failure) == (3, 1, "transient")
    assert h.error_rate == pytest.approx(1 / 3)
    view = await store.before(Ticket((A,), 1, reserve=False), T0 + 3)
    assert view.latency_s[A.target_id] == pytest.approx(1.2)


# --- key limits --------------------------------------------------------------------------------


async def test_key_rpm_admits_exactly_the_limit(store: StateStore) -> None:
    await add_key(store)
    left = []
    for i in range(3):
        v = (await store.before(Ticket((A,), 1, key(rpm=3)), T0 + i)).verdict
        assert v is not None and v.refused is None
        left.append(v.rpm_remaining)
    assert left == [2, 1, 0]
    view = await store.before(Ticket((A,), 1, key(rpm=3)), T0 + 10)
    assert view.verdict is not None and view.verdict.refused == "rpm" and view.lease is None
    assert view.verdict.retry_after_s == pytest.approx(50.0)
    assert view.verdict.rpm_reset_s == pytest.approx(52.0)
    again = await store.before(Ticket((A,), 1, key(rpm=3, at=T0 + 61)), T0 + 61)
    assert again.verdict is not None and again.verdict.refused is None
    # T0 and T0 + 1 left the window (T0 + 1 at its edge), T0 + 2 is still in it
    assert again.verdict.rpm_remaining == 1


# Steps of a key's traffic: (seconds since the last step, tokens estimated, tokens used, whether
# the request settles); deployment A with limits of its own, the key with rpm, tpm and a budget.
_STEPS = st.lists(
    st.tuples(
        st.one_of(  # the window's edges (60 s, one-second buckets) and anything up to 90 s
            st.sampled_from([0.0, 0.4, 1.0, 58.6, 59.0, 59.9, 60.0, 60.1, 61.0, 125.0]),
            st.integers(0, 900).map(lambda tenths: tenths / 10),
        ),
        st.integers(1, 700),
        st.integers(0, 900),
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(steps=_STEPS)
def test_key_and_deployment_windows_agree_with_memory_step_by_step(
    redis_server: RedisServer, steps: list[tuple[float, int, int, bool]]
) -> None:
    """The Redis windows (per-second buckets summed in Lua) and the in-memory ones
    (:mod:`gateway.state.windows`) give the same verdicts, remaining counts, resets and
    saturation at every step of any sequence: bucket edges, idle gaps longer than a window,
    reservations settled from usage or left to lapse."""
    asyncio.run(_windows_agree(redis_server.url, steps))


async def _windows_agree(url: str, steps: list[tuple[float, int, int, bool]]) -> None:
    mem = MemoryState(CFG)
    red = RedisState(url, CFG, timeout_ms=5000, prefix=f"h{os.urandom(4).hex()}")
    limited = DeploymentAsk(A.target_id, rpm=6, tpm=2500)
    stores: tuple[StateStore, StateStore] = (mem, red)
    for s in stores:
        await add_key(s)
    t = T0
    try:
        for i, (dt, est, used, settle) in enumerate(steps):
            t += dt
            k = key(rpm=4, tpm=1500, budget=400, cost=30, at=t)
            views = [await s.before(Ticket((limited, B), est, k), t) for s in stores]
            got = []
            for view in views:
                v = view.verdict
                assert v is not None
                got.append(
                    (
                        v.refused,
                        round(v.retry_after_s, 6),
                        v.rpm_remaining,
                        round(v.rpm_reset_s, 6),
                        v.tpm_remaining,
                        round(v.tpm_reset_s, 6),
                        v.spend_micros,
                        v.reserved_micros,
                        {
                            tid: (round(x.retry_after_s, 6), x.limit)
                            for tid, x in view.saturated.items()
                        },
                        view.lease is not None and view.lease.deployment,
                    )
                )
            assert got[0] == got[1], (
                f"step {i} at +{t - T0:.1f}s: memory {got[0]} != redis {got[1]}"
            )
            if settle:
                for s, view in zip(stores, views, strict=True):
                    if view.lease is not None:
                        done = Outcome(limited.target_id, True, 0.1)
                        report = Report(
                            (done,), (limited.target_id,), view.lease, limited.target_id, used, 7
                        )
                        await s.after(report, t)
    finally:
        await red.aclose()


async def test_key_tpm_reserves_the_estimate_and_settles_from_usage(store: StateStore) -> None:
    await add_key(store)
    first = await store.before(Ticket((A,), 600, key(tpm=1000)), T0)
    assert first.verdict is not None and first.verdict.tpm_remaining == 400
    refused = await store.before(Ticket((A,), 600, key(tpm=1000)), T0 + 1)
    assert refused.verdict is not None and refused.verdict.refused == "tpm"
    await store.after(Report((), (A.target_id,), first.lease, A.target_id, 100), T0 + 2)
    after = await store.before(Ticket((A,), 600, key(tpm=1000)), T0 + 3)
    assert after.verdict is not None and after.verdict.refused is None
    assert after.verdict.tpm_remaining == 300


async def test_a_request_larger_than_the_tpm_can_never_fit(store: StateStore) -> None:
    await add_key(store)
    view = await store.before(Ticket((A,), 2000, key(tpm=1000)), T0)
    assert view.verdict is not None and view.verdict.refused == "tpm"
    assert view.verdict.retry_after_s == -1


async def test_an_unsettled_reservation_leaves_the_window(store: StateStore) -> None:
    await add_key(store)
    await store.before(Ticket((A,), 900, key(tpm=1000)), T0)
    blocked = await store.before(Ticket((A,), 900, key(tpm=1000)), T0 + 59)
    assert blocked.verdict is not None and blocked.verdict.refused == "tpm"
    freed = await store.before(Ticket((A,), 900, key(tpm=1000)), T0 + 60)
    assert freed.verdict is not None and freed.verdict.refused is None


async def test_budget_counts_spend_and_reservations_in_flight(store: StateStore) -> None:
    await add_key(store)
    leases = []
    for i in range(2):
        view = await store.before(Ticket((A,), 1, key(budget=1000, cost=400)), T0 + i)
        assert view.verdict is not None and view.verdict.refused is None
        leases.append(view.lease)
    over = await store.before(Ticket((A,), 1, key(budget=1000, cost=400)), T0 + 2)
    v = over.verdict
    assert v is not None and v.refused == "budget" and over.lease is None
    assert (v.spend_micros, v.reserved_micros) == (0, 800)
    period, end = period_window("day", T0)
    assert v.retry_after_s == pytest.approx(end - T0 - 2)
    await store.after(Report((), (A.target_id,), leases[0], A.target_id, 10, 100), T0 + 3)
    assert await store.key_spend("k1", period) == 100
    fits = await store.before(Ticket((A,), 1, key(budget=1000, cost=400)), T0 + 4)
    assert fits.verdict is not None and fits.verdict.refused is None
    assert fits.verdict.spend_micros == 100 and fits.verdict.reserved_micros == 800


async def test_a_new_budget_period_starts_from_zero(store: StateStore) -> None:
    await add_key(store)
    view = await store.before(Ticket((A,), 1, key(budget=500, cost=400)), T0)
    await store.after(Report((), (A.target_id,), view.lease, A.target_id, 1, 450), T0 + 1)
    over = await store.before(Ticket((A,), 1, key(budget=500, cost=400)), T0 + 2)
    assert over.verdict is not None and over.verdict.refused == "budget"
    later = T0 + 86400
    fresh = await store.before(Ticket((A,), 1, key(budget=500, cost=400, at=later)), later)
    assert fresh.verdict is not None and fresh.verdict.refused is None


async def test_over_budget_downgrades_when_the_cheap_variant_fits(store: StateStore) -> None:
    await add_key(store)
    ask = key(budget=1000, cost=800, cheap=100)
    full = await store.before(Ticket((A,), 1, ask), T0)
    assert full.verdict is not None and not full.verdict.downgraded
    cheap = await store.before(Ticket((A,), 1, ask), T0 + 1)
    assert cheap.verdict is not None and cheap.verdict.downgraded and not cheap.verdict.refused
    assert cheap.lease is not None and cheap.lease.cost_micros == 100
    assert cheap.lease.deployment is None
    refused = await store.before(Ticket((A,), 1, key(budget=1000, cost=800, cheap=200)), T0 + 2)
    assert refused.verdict is not None and refused.verdict.refused == "budget"


async def test_revoked_and_unknown_keys_are_refused(store: StateStore) -> None:
    await add_key(store, "gone", revoked=True)
    for kid in ("gone", "never"):
        view = await store.before(Ticket((A,), 1, key(rpm=5, kid=kid)), T0)
        assert view.verdict is not None and view.verdict.refused == "revoked"
        assert view.lease is None


async def test_looking_takes_nothing(store: StateStore) -> None:
    await add_key(store)
    await trip(store)
    for _ in range(3):
        view = await store.before(Ticket((A, B), 1, key(rpm=1), reserve=False), T0 + 11)
        assert view.lease is None and A.target_id not in view.open_circuits
    real = await store.before(Ticket((A, B), 1, key(rpm=1)), T0 + 11)
    assert real.lease is not None and real.lease.probes == (A.target_id,)


async def test_nothing_is_taken_when_no_candidate_is_available(store: StateStore) -> None:
    await add_key(store)
    await trip(store)
    view = await store.before(Ticket((A,), 1, key(rpm=1)), T0 + 1)
    assert view.verdict is None and view.lease is None
    ok_now = await store.before(Ticket((B,), 1, key(rpm=1)), T0 + 2)
    assert ok_now.verdict is not None and ok_now.verdict.refused is None


# --- deployment limits -----------------------------------------------------------------------


async def test_a_deployment_at_its_rpm_is_skipped(store: StateStore) -> None:
    a = DeploymentAsk(A.target_id, rpm=2)
    for i in range(2):
        view = await store.before(Ticket((a, B), 1), T0 + i)
        assert view.lease is not None and view.lease.deployment == A.target_id
    view = await store.before(Ticket((a, B), 1), T0 + 5)
    sat = view.saturated[A.target_id]
    assert (sat.kind, sat.limit) == ("rpm", 2) and sat.seconds == pytest.approx(55.0)
    assert "rpm limit (2 requests/min)" in sat.reason
    assert view.lease is not None and view.lease.deployment == B.target_id


async def test_fallback_attempts_count_against_the_deployment(store: StateStore) -> None:
    b = DeploymentAsk(B.target_id, rpm=1)
    view = await store.before(Ticket((A, b), 1), T0)
    assert view.lease is not None
    attempts = (A.target_id, B.target_id)
    await store.after(Report((), attempts, view.lease, B.target_id, 5), T0 + 1)
    after = await store.before(Ticket((b,), 1), T0 + 2)
    assert B.target_id in after.saturated


async def test_a_reserved_deployment_that_was_not_tried_gets_its_request_back(
    store: StateStore,
) -> None:
    a = DeploymentAsk(A.target_id, rpm=1, tpm=100)
    view = await store.before(Ticket((a, B), 50), T0)
    assert view.lease is not None and view.lease.deployment == A.target_id
    await store.after(Report((), (B.target_id,), view.lease, B.target_id, 60), T0 + 1)
    again = await store.before(Ticket((a,), 100), T0 + 2)
    assert again.saturated == {} and again.lease is not None


async def test_deployment_tpm_counts_actual_tokens(store: StateStore) -> None:
    a = DeploymentAsk(A.target_id, tpm=1000)
    view = await store.before(Ticket((a,), 800), T0)
    assert (await store.before(Ticket((a,), 300), T0 + 1)).saturated
    await store.after(Report((), (A.target_id,), view.lease, A.target_id, 200), T0 + 2)
    fits = await store.before(Ticket((a,), 700), T0 + 3)
    assert fits.saturated == {}


# --- atomicity, keys ---------------------------------------------------------------------------


async def test_concurrent_requests_never_exceed_the_rpm(store: StateStore) -> None:
    await add_key(store)
    views = await asyncio.gather(
        *(store.before(Ticket((A,), 1, key(rpm=10)), T0) for _ in range(40))
    )
    allowed = [v for v in views if v.verdict is not None and v.verdict.refused is None]
    assert len(allowed) == 10
    assert all(v.lease is None for v in views if v not in allowed)


async def test_key_records_round_trip_and_bump_the_version(store: StateStore) -> None:
    v0 = (await store.before(Ticket((A,), 1, reserve=False), T0)).keys_version
    record = KeyRecord("abc123abc123", "ci", "f" * 64, "sk-glm-abc…", T0, None, ("glm-4.7",),
                       ("vision",), 5, 500, 1.5, "week", True)  # fmt: skip
    await store.put_key(record)
    assert await store.get_key("abc123abc123") == record
    assert await store.get_key("missing") is None
    await store.put_key(record.revoke(T0 + 1))
    listed = await store.list_keys()
    assert [r.id for r in listed] == ["abc123abc123"] and listed[0].revoked
    v2 = (await store.before(Ticket((A,), 1, reserve=False), T0)).keys_version
    assert v2 == v0 + 2
    assert orjson.loads(record.to_json())["allowed_variants"] == ["glm-4.7"]


async def test_the_lease_carries_what_after_needs(store: StateStore) -> None:
    await add_key(store)
    view = await store.before(Ticket((A,), 7, key(budget=10**6, cost=3)), T0 + 0.5)
    lease = view.lease
    assert isinstance(lease, Lease)
    period, end = period_window("day", T0)
    assert (lease.key_id, lease.second, lease.tokens, lease.cost_micros) == ("k1", int(T0), 7, 3)
    assert (lease.period, lease.period_end, lease.deployment) == (period, end, A.target_id)


# --- requests in flight per key (max_in_flight) ------------------------------------------------


async def test_max_in_flight_admits_the_limit_until_one_ends(store: StateStore) -> None:
    await add_key(store)
    leases = []
    for i in range(2):
        view = await store.before(Ticket((A,), 1, busy(2)), T0 + i)
        v = view.verdict
        assert (
            v is not None and v.refused is None and (v.in_flight_limit, v.in_flight) == (2, i + 1)
        )
        assert view.lease is not None and view.lease.slot is not None
        leases.append(view.lease)
    full = await store.before(Ticket((A,), 1, busy(2)), T0 + 2)
    v = full.verdict
    assert v is not None and v.refused == "concurrency" and full.lease is None
    assert (v.retry_after_s, v.in_flight_limit, v.in_flight) == (1.0, 2, 2)
    await store.after(Report((), (A.target_id,), leases[0], A.target_id, 1), T0 + 3)
    again = await store.before(Ticket((A,), 1, busy(2)), T0 + 4)
    assert again.verdict is not None and again.verdict.refused is None
    assert again.verdict.in_flight == 2


async def test_concurrent_requests_never_exceed_max_in_flight(store: StateStore) -> None:
    await add_key(store)
    views = await asyncio.gather(*(store.before(Ticket((A,), 1, busy(5)), T0) for _ in range(30)))
    allowed = [v for v in views if v.verdict is not None and v.verdict.refused is None]
    assert len(allowed) == 5
    assert len({v.lease.slot for v in allowed if v.lease is not None}) == 5
    refused = [v for v in views if v not in allowed]
    assert all(
        v.lease is None and v.verdict and v.verdict.refused == "concurrency" for v in refused
    )


async def test_a_slot_never_released_comes_back_after_its_hold(store: StateStore) -> None:
    """A replica that crashed mid-request never sends ``after``: its slot expires."""
    await add_key(store)
    for _ in range(2):
        assert (await store.before(Ticket((A,), 1, busy(2, hold=10)), T0)).lease is not None
    held = await store.before(Ticket((A,), 1, busy(2, hold=10)), T0 + 9.5)
    assert held.verdict is not None and held.verdict.refused == "concurrency"
    back = await store.before(Ticket((A,), 1, busy(2, hold=10)), T0 + 10)
    assert back.verdict is not None and back.verdict.refused is None
    assert back.verdict.in_flight == 1


async def test_refused_and_looking_requests_hold_no_slot(store: StateStore) -> None:
    await add_key(store)
    for _ in range(3):
        look = await store.before(Ticket((A,), 1, busy(1), reserve=False), T0)
        assert look.lease is None and look.verdict is not None and look.verdict.refused is None
    over_rpm = await store.before(Ticket((A,), 1, busy(1, rpm=1)), T0)
    assert over_rpm.lease is not None
    refused = await store.before(Ticket((A,), 1, busy(1, rpm=1)), T0 + 1)
    assert refused.verdict is not None and refused.verdict.refused == "rpm"
    await store.after(Report((), (A.target_id,), over_rpm.lease), T0 + 2)
    free = await store.before(Ticket((A,), 1, busy(1)), T0 + 3)
    assert free.verdict is not None and free.verdict.refused is None
    assert free.verdict.in_flight == 1


async def test_slots_are_counted_per_key(store: StateStore) -> None:
    await add_key(store, "k1")
    await add_key(store, "k2")
    assert (await store.before(Ticket((A,), 1, busy(1, kid="k1")), T0)).lease is not None
    other = await store.before(Ticket((A,), 1, busy(1, kid="k2")), T0)
    assert other.verdict is not None and other.verdict.refused is None
    same = await store.before(Ticket((A,), 1, busy(1, kid="k1")), T0)
    assert same.verdict is not None and same.verdict.refused == "concurrency"


async def test_max_in_flight_round_trips_in_the_key_record(store: StateStore) -> None:
    record = KeyRecord("def456def456", "ci", "f" * 64, "sk-glm-def…", T0, max_in_flight=3)
    await store.put_key(record)
    assert await store.get_key("def456def456") == record
    # a record stored before the field existed reads as "no limit"
    legacy = orjson.loads(record.to_json())
    del legacy["max_in_flight"]
    assert KeyRecord.from_json(orjson.dumps(legacy)).max_in_flight is None


# --- requests in flight per spread deployment (routing.spread) ----------------------------------

FREE_A, FREE_B = DeploymentAsk("vllm-a/glm-4-9b"), DeploymentAsk("vllm-b/glm-4-9b")
"""Spread deployments without limits of their own: only their requests in flight count."""


def flying(*asks: DeploymentAsk, hold: float = 300.0, reserve: bool = True) -> Ticket:
    """A request whose plan spreads over ``asks`` (each call its own slot id)."""
    ids = tuple(a.target_id for a in asks)
    return Ticket(asks, 1, None, reserve, FlightAsk(ids, f"fl-{next(_slot_ids)}", hold))


async def test_in_flight_is_counted_on_the_first_available_deployment(store: StateStore) -> None:
    first = await store.before(flying(FREE_A, FREE_B), T0)
    assert first.in_flight == {FREE_A.target_id: 1, FREE_B.target_id: 0}
    assert first.lease is not None and first.lease.flight is not None
    assert first.lease.flight[0] == FREE_A.target_id
    second = await store.before(flying(FREE_B, FREE_A), T0)
    assert second.in_flight == {FREE_A.target_id: 1, FREE_B.target_id: 1}
    third = await store.before(flying(FREE_A, FREE_B), T0)
    assert third.in_flight == {FREE_A.target_id: 2, FREE_B.target_id: 1}
    await store.after(Report(lease=first.lease), T0 + 1)
    look = await store.before(flying(FREE_A, FREE_B, reserve=False), T0 + 2)
    assert look.in_flight == {FREE_A.target_id: 1, FREE_B.target_id: 1} and look.lease is None


async def test_a_deployment_slot_never_released_comes_back_after_its_hold(
    store: StateStore,
) -> None:
    assert (await store.before(flying(FREE_A, hold=10), T0)).lease is not None
    still = await store.before(flying(FREE_A, reserve=False), T0 + 9.5)
    assert still.in_flight == {FREE_A.target_id: 1}
    gone = await store.before(flying(FREE_A, reserve=False), T0 + 10)
    assert gone.in_flight == {FREE_A.target_id: 0}


async def test_no_flight_is_counted_unless_asked(store: StateStore) -> None:
    plain = await store.before(Ticket((FREE_A,), 1), T0)
    assert plain.in_flight == {} and plain.lease is not None and plain.lease.flight is None
    # the head is not a spread deployment: nothing taken, the others still reported
    other = await store.before(
        Ticket((A, FREE_A), 1, None, True, FlightAsk((FREE_A.target_id,), "fl-x", 60.0)), T0
    )
    assert other.lease is not None and other.lease.flight is None
    assert other.in_flight == {FREE_A.target_id: 0}


async def test_refused_and_open_requests_hold_no_deployment_slot(store: StateStore) -> None:
    await add_key(store)
    over = Ticket((FREE_A,), 1, busy(1, rpm=1), True, FlightAsk((FREE_A.target_id,), "f1", 60.0))
    assert (await store.before(over, T0)).lease is not None
    again = replace(over, flight=FlightAsk((FREE_A.target_id,), "f2", 60.0))
    refused = await store.before(again, T0 + 1)
    assert refused.verdict is not None and refused.verdict.refused is not None
    assert refused.in_flight == {FREE_A.target_id: 1}


async def test_concurrent_requests_count_every_deployment_slot(store: StateStore) -> None:
    views = await asyncio.gather(*(store.before(flying(FREE_A), T0) for _ in range(20)))
    assert sorted(v.in_flight[FREE_A.target_id] for v in views) == list(range(1, 21))


async def test_a_pin_is_read_back_until_its_ttl_passes(store: StateStore) -> None:
    assert await store.get_pin("s1", T0) is None
    await store.set_pin("s1", A.target_id, 300.0, T0)
    pin = await store.get_pin("s1", T0 + 299)
    assert pin is not None and pin.target_id == A.target_id
    assert pin.until == pytest.approx(T0 + 300, abs=0.01)
    assert await store.get_pin("s1", T0 + 300.5) is None
    assert await store.get_pin("s2", T0) is None  # per session


async def test_a_repin_replaces_the_pin_and_restarts_its_ttl(store: StateStore) -> None:
    await store.set_pin("s1", A.target_id, 60.0, T0)
    await store.set_pin("s1", B.target_id, 60.0, T0 + 50)
    pin = await store.get_pin("s1", T0 + 100)
    assert pin is not None and pin.target_id == B.target_id


async def test_pins_of_many_sessions_are_independent(store: StateStore) -> None:
    tids = [A.target_id, B.target_id]
    await asyncio.gather(*(store.set_pin(f"s{i}", tids[i % 2], 60.0, T0) for i in range(20)))
    pins = await asyncio.gather(*(store.get_pin(f"s{i}", T0 + 1) for i in range(20)))
    assert [p.target_id if p else None for p in pins] == [tids[i % 2] for i in range(20)]


async def test_before_answers_the_sessions_pin_in_the_same_call(store: StateStore) -> None:
    assert (await store.before(Ticket((A,), 1, session="s1"), T0)).pin is None
    await store.set_pin("s1", B.target_id, 60.0, T0)
    view = await store.before(Ticket((A,), 1, session="s1"), T0 + 1)
    assert view.pin is not None and view.pin.target_id == B.target_id
    assert type(view.pin.until) is float and view.pin.until == pytest.approx(T0 + 60, abs=0.01)
    assert (await store.before(Ticket((A,), 1), T0 + 1)).pin is None  # not asked
    assert (await store.before(Ticket((A,), 1, session="s1"), T0 + 61)).pin is None  # lapsed


async def test_an_available_pinnable_pin_takes_the_reservation_and_the_slot(
    store: StateStore,
) -> None:
    await store.set_pin("s1", FREE_B.target_id, 60.0, T0)
    lim_b = DeploymentAsk(FREE_B.target_id, rpm=2)
    asks = (FREE_A, lim_b)
    ids = (FREE_A.target_id, FREE_B.target_id)

    def ticket(slot: str, pinnable: tuple[str, ...] = ids) -> Ticket:
        return Ticket(asks, 1, None, True, FlightAsk(ids, slot, 60.0), "s1", pinnable)

    views = [await store.before(ticket(f"p{i}"), T0 + 1) for i in range(3)]
    # the pinned deployment counts as the first available one: its rpm and in-flight slot
    assert [v.lease.deployment if v.lease else "-" for v in views[:2]] == [FREE_B.target_id] * 2
    assert [v.lease.flight[0] if v.lease and v.lease.flight else "-" for v in views] == [
        FREE_B.target_id,
        FREE_B.target_id,
        FREE_A.target_id,  # at its rpm: not available, so not first
    ]
    assert views[2].lease is not None and views[2].lease.deployment is None
    assert FREE_B.target_id in views[2].saturated
    # a pin to a deployment the ticket does not list as pinnable changes nothing
    plain = await store.before(ticket("p9", pinnable=(FREE_A.target_id,)), T0 + 1)
    assert plain.lease is not None and plain.lease.flight == (FREE_A.target_id, "p9")


async def test_before_reports_the_share_of_its_limits_each_spread_deployment_used(
    store: StateStore,
) -> None:
    lim_a = DeploymentAsk(FREE_A.target_id, rpm=4, tpm=1000)
    ids = (FREE_A.target_id, FREE_B.target_id)

    def ticket(tokens: int, reserve: bool = True) -> Ticket:
        return Ticket((lim_a, FREE_B), tokens, None, reserve, FlightAsk(ids, "u", 60.0))

    assert (await store.before(ticket(100), T0)).load == {}  # nothing used yet (then 1 + 100)
    assert (await store.before(ticket(500), T0 + 1)).load == {FREE_A.target_id: 0.25}
    # 2 of 4 requests, 600 of 1000 tokens: the larger share; b has no limits to use
    assert (await store.before(ticket(1, False), T0 + 2)).load == {
        FREE_A.target_id: pytest.approx(0.6)
    }
    assert (await store.before(Ticket((lim_a,), 1, None, False), T0 + 2)).load == {}  # not asked


# --- Redis Cluster: one slot -----------------------------------------------------------------


async def test_in_a_cluster_every_key_of_the_state_is_in_one_slot(
    redis_cluster: RedisClusterGroup,
) -> None:
    """The hash tag ``{prefix}``: every key the scripts and key records touch is in the slot
    of the prefix, on one master (a script touching another slot would fail there)."""
    prefix = f"t{os.urandom(4).hex()}"
    target = RedisTarget("cluster", nodes=parse_nodes(redis_cluster.seeds, "nodes"))
    state = RedisState(target, CFG, timeout_ms=2000, prefix=prefix)
    try:
        await add_key(state)
        view = await state.before(Ticket((A, B), 10, key(rpm=100, tpm=10**6, budget=10**6)), T0)
        await state.after(Report(attempts=(A.target_id,), lease=view.lease, cost_micros=3), T0)
        await state.before(flying(B), T0)
        await trip(state)
        await state.open_until((B.target_id,), T0 + 60, "test", T0)
        await state.set_pin("session", A.target_id, 60, T0)
        assert await state.get_pin("session", T0) is not None
        assert not state.degraded
    finally:
        await state.aclose()
    found: dict[str, set[int]] = {}
    for node in redis_cluster.nodes:
        r = Redis(port=node.port)
        try:
            for k in await r.keys(f"*{prefix}*"):
                found.setdefault(k.decode(), set()).add(node.port)
        finally:
            await r.aclose()
    assert len(found) >= 10, sorted(found)
    assert all(k.startswith("{" + prefix + "}:") for k in found), sorted(found)
    assert len({port for ports in found.values() for port in ports}) == 1
    assert {key_slot(k.encode()) for k in found} == {key_slot(prefix.encode())}
