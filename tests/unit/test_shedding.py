"""The process in-flight gate: fast path, FIFO hand-over, bounded queue, timeouts, cancellation.

No timed assertions: every wait is bounded and the tests check order and outcomes.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.observability.metrics import Metrics
from gateway.tenancy.shedding import InFlightGate, Overloaded


def shed(m: Metrics, reason: str) -> float:
    return (
        m.registry.get_sample_value(
            "glm_gateway_shed_total", {"scope": "process", "reason": reason}
        )
        or 0.0
    )


async def test_uncontended_requests_take_a_slot_without_waiting() -> None:
    gate = InFlightGate(2, 1, 1.0)
    assert gate.take() and gate.take()
    assert not gate.take() and gate.running == 2
    gate.leave()
    assert gate.running == 1 and gate.take()


async def test_a_freed_slot_goes_to_the_oldest_waiter_first() -> None:
    gate = InFlightGate(1, 3, 30.0)
    assert gate.take()
    order: list[int] = []

    async def queued(i: int) -> None:
        await gate.wait()
        order.append(i)

    tasks = [asyncio.create_task(queued(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert gate.queued == 3
    assert not gate.take(), "a newcomer must not overtake the queue"
    for _ in range(3):
        gate.leave()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and gate.running == 1 and gate.queued == 0


async def test_a_full_queue_sheds_at_once_with_retry_after() -> None:
    m = Metrics()
    gate = InFlightGate(1, 1, 30.0, m)
    assert gate.take()
    waiting = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as caught:
        await gate.wait()
    err = caught.value
    assert (err.status, err.type, err.code) == (503, "server_error", "overloaded")
    assert err.headers["Retry-After"] == "30"
    assert "1 requests are in flight" in err.message and "1 more are already waiting" in err.message
    assert shed(m, "queue_full") == 1
    gate.leave()
    await waiting
    assert gate.running == 1


async def test_a_wait_that_runs_out_is_shed_and_observed() -> None:
    m = Metrics()
    gate = InFlightGate(1, 4, 0.01, m)
    assert gate.take()
    with pytest.raises(Overloaded) as caught:
        await gate.wait()
    assert caught.value.headers["Retry-After"] == "1"
    assert shed(m, "queue_timeout") == 1
    assert m.registry.get_sample_value("glm_gateway_queue_seconds_count") == 1
    assert gate.queued == 0 and gate.running == 1
    gate.leave()
    assert gate.running == 0


async def test_no_queue_sheds_every_request_over_the_cap() -> None:
    gate = InFlightGate(1, 0, 1.0)
    assert gate.take()
    with pytest.raises(Overloaded):
        await gate.wait()


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    gate = InFlightGate(1, 2, 30.0)
    assert gate.take()
    waiting = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gate.queued == 0
    gate.leave()
    assert gate.running == 0


async def test_a_slot_handed_to_a_waiter_cancelled_meanwhile_is_passed_on() -> None:
    gate = InFlightGate(1, 2, 30.0)
    assert gate.take()
    first = asyncio.create_task(gate.wait())
    second = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    gate.leave()  # hands the slot to ``first``...
    first.cancel()  # ...which is cancelled before it runs: the slot must reach ``second``
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert gate.running == 1 and gate.queued == 0
    gate.leave()
    assert gate.running == 0
