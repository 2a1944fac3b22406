"""Spread through admission and the in-memory state: the window of a deployment at its ``rpm``
turning, and requests in flight flowing from shared state into the choice.

The clock is passed in, so "until its window turns" is exact here; the same path across two
real replicas and Redis is in ``tests/e2e/test_spread.py``.
"""

from __future__ import annotations

from gateway.catalogue.catalogue import Config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.schema import SpreadConfig
from gateway.state.memory import MemoryState
from gateway.tenancy.limits import Admission, Admitted
from tests.support.catalogue import make_config, make_target, make_variant

T0 = 1_900_000_000.0
V = make_variant("glm-4-9b")


def setup(rpm: int | None = 2, **spread: bool) -> tuple[Config, Admission, list[float]]:
    """Deployments a (with ``rpm``) and b of one variant, spread on, a clock to move."""
    targets = [make_target("a", V, rpm=rpm), make_target("b", V)]
    config = make_config(targets, spread=SpreadConfig(enabled=True, **spread))
    clock = [T0]
    state = MemoryState(config.gateway.breaker)
    return config, Admission(config, state, wall=lambda: clock[0]), clock


async def send(config: Config, admission: Admission, settle: bool = True) -> Admitted:
    body = {"model": "glm-4-9b", "messages": [{"role": "user", "content": "hi"}]}
    admitted = await admission.admit(resolve_needs(body, {}, config), None)
    if settle:
        head = admitted.plan.targets[0]
        await admission.settle(admitted.lease, [], [head], head, None)
    return admitted


async def test_a_deployment_at_its_rpm_is_skipped_until_its_window_turns() -> None:
    config, admission, clock = setup()
    firsts = []
    for _ in range(6):
        firsts.append((await send(config, admission)).plan.targets[0].provider)
        clock[0] += 1
    # a (2 requests/min) weighs half its weight once it holds one; at its limit it is skipped
    assert firsts == ["a", "b", "b", "a", "b", "b"]
    clock[0] = T0 + 59.5
    assert (await send(config, admission)).plan.targets[0].provider == "b"
    clock[0] = T0 + 61  # both of a's requests have left its window
    back = [(await send(config, admission)).plan.targets[0].provider for _ in range(2)]
    assert sorted(back) == ["a", "b"]


async def test_requests_in_flight_come_back_from_state_and_steer_the_choice() -> None:
    """b never finishes its requests (a slow server); a finishes each at once."""
    config, admission, _ = setup(rpm=None)
    firsts = []
    for _ in range(30):
        admitted = await send(config, admission, settle=False)
        head = admitted.plan.targets[0]
        firsts.append(head.provider)
        if head.provider == "a":
            await admission.settle(admitted.lease, [], [head], head, None)
    assert firsts[:4] == ["a", "b", "a", "b"]  # idle: turn by turn
    # once b holds more than its half of what is in flight + 2, it is passed over: it gets a
    # request now and then (when a's last one still counts), not every other one (15 of 30)
    assert firsts.count("b") <= 8 and firsts[-4:].count("a") >= 3, firsts
    body = {"model": "glm-4-9b", "messages": [{"role": "user", "content": "and now?"}]}
    look = await admission.admit(resolve_needs(body, {}, config), None, reserve=False)
    [group] = look.plan.spread
    flying = dict(zip(group.ids, group.in_flight, strict=True))
    assert flying == {"a/glm-4-9b": 0, "b/glm-4-9b": firsts.count("b")}, flying
    assert look.plan.targets[0].provider == "a"


async def test_without_in_flight_counting_nothing_is_asked_of_state() -> None:
    config, admission, _ = setup(in_flight=False)
    admitted = await send(config, admission, settle=False)
    assert admitted.lease is not None and admitted.lease.flight is None


async def test_a_member_filling_its_rpm_gets_less_before_it_is_full() -> None:
    """a has rpm 10, b none: idle they alternate; as a's window fills, b takes more."""
    config, admission, _ = setup(rpm=10)
    firsts = [(await send(config, admission)).plan.targets[0].provider for _ in range(16)]
    assert firsts[:2] == ["a", "b"]
    assert 3 <= firsts.count("a") <= 6, firsts  # 8 of 16 by weight alone
    assert firsts[-6:].count("a") < firsts[:6].count("a"), firsts
