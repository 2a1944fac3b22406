"""Lifecycle: phases on signals, the drain, and the cut of what outlives it (real tasks)."""

from __future__ import annotations

import asyncio

from gateway.edge.lifecycle import Lifecycle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_signal_drains_after_the_grace_second_hurries() -> None:
    clock = Clock()
    life = Lifecycle(grace_s=5.0, drain_s=30.0, clock=clock)
    assert not life.draining and not life.grace_over()
    life.signal("SIGTERM")
    assert life.draining and not life.grace_over()
    clock.now += 5.0
    assert life.grace_over() and not life.hurry
    life.signal("SIGINT")
    assert life.hurry and life.signals == ["SIGTERM", "SIGINT"]


def test_second_signal_ends_the_grace_at_once() -> None:
    life = Lifecycle(grace_s=60.0, drain_s=60.0, clock=Clock())
    life.signal("SIGINT")
    assert not life.grace_over()
    life.signal("SIGINT")
    assert life.grace_over()


async def test_drain_waits_for_requests_that_finish() -> None:
    life = Lifecycle(grace_s=0.0, drain_s=30.0)
    release = asyncio.Event()
    order: list[str] = []

    async def request() -> None:
        await release.wait()
        order.append("request done")

    task = asyncio.create_task(request())
    life.tasks.add(task)
    task.add_done_callback(life.tasks.discard)
    drain = asyncio.create_task(life.drain())
    await asyncio.sleep(0)
    assert not drain.done()
    release.set()
    assert await drain == 0
    order.append("drained")
    assert order == ["request done", "drained"]
    assert life.stopping


async def test_drain_cuts_what_outlives_it_and_the_task_sees_stopping() -> None:
    life = Lifecycle(grace_s=0.0, drain_s=0.0)
    seen: list[bool] = []

    async def request() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(life.stopping)
            raise

    task = asyncio.create_task(request())
    life.tasks.add(task)
    await asyncio.sleep(0)
    assert await life.drain() == 1
    assert task.cancelled() and seen == [True]


async def test_hurry_ends_the_drain() -> None:
    life = Lifecycle(grace_s=0.0, drain_s=600.0)
    task = asyncio.create_task(asyncio.Event().wait())
    life.tasks.add(task)
    life.signal("SIGTERM")
    drain = asyncio.create_task(life.drain())
    await asyncio.sleep(0)
    life.signal("SIGTERM")
    assert await asyncio.wait_for(drain, 30) == 1
    assert task.cancelled()
