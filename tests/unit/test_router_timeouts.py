"""The router's per-request reads of its routing settings, held as plain attributes, and its
``min`` calls written out as comparisons: the same numbers (and types) as before, and a
``_routing`` set later (as tests do) is what the next request reads."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.loader import load_config
from gateway.errors import UpstreamsFailed
from gateway.providers.base import UpstreamResponse, UpstreamTimeout
from gateway.routing.affinity import session_key
from gateway.routing.planner import Plan
from gateway.routing.router import Router, RouteState
from gateway.state.memory import MemoryState
from tests.support.procs import CONFIG

CONF = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")
TARGETS = CONF.catalogue.targets

seconds = st.one_of(
    st.integers(-2, 40),
    st.floats(-2.0, 40.0, allow_nan=False),
    st.sampled_from([0, 0.0, -0.0, 1, 1.0, 30, 30.0, 600, 600.0]),
)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, target: Any, body: Any, **kw: Any) -> UpstreamResponse:
        self.sent.append(kw)
        return UpstreamResponse(500, {}, b"")


def _router(clock: float, **routing: Any) -> tuple[Router, Recorder]:
    rec = Recorder()
    router = Router(
        CONF,
        {"openai": rec},  # type: ignore[dict-item]
        MemoryState(CONF.gateway.breaker),
        clock=lambda: clock,
    )
    router._routing = CONF.gateway.routing.model_copy(update=routing)
    return router, rec


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and (a == b or (a != a and b != b))


@settings(max_examples=300, deadline=None)
@given(seconds, st.one_of(st.none(), seconds), st.floats(0.0, 100.0))
def test_deadline_is_min_of_total_and_the_requests(total: Any, own: Any, now: float) -> None:
    router, _ = _router(now, total_timeout_s=total)
    total = router._routing.total_timeout_s  # as the model holds it
    want = now + (total if own is None else min(total, own))
    assert _same(router.deadline(SimpleNamespace(timeout=own)), want)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(seconds, seconds, st.one_of(st.none(), seconds), seconds, st.floats(0.0, 50.0))
def test_send_timeouts_are_the_mins_they_were(
    attempt: Any, connect: Any, own: Any, left: Any, now: float
) -> None:
    router, rec = _router(now, attempt_timeout_s=attempt, connect_timeout_s=connect)
    routing = router._routing
    target = dataclasses.replace(TARGETS[0], timeout=own)
    read = min(routing.attempt_timeout_s, target.timeout or 1e9, (now + left) - now)
    try:
        sent = router._send(target, {}, False, now + left)
    except UpstreamTimeout:
        assert read <= 0
        return
    asyncio.run(sent)  # type: ignore[arg-type]
    assert read > 0
    kw = rec.sent[0]
    assert _same(kw["read_timeout"], read)
    assert _same(kw["connect_timeout"], min(routing.connect_timeout_s, read))


def test_routing_set_later_is_what_requests_read() -> None:
    router, rec = _router(0.0, max_attempts=0)
    rs = RouteState(Plan(candidates=[]))
    rs.plan.targets = [TARGETS[0]]
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(UpstreamsFailed):  # no attempt allowed: none made
        asyncio.run(router.complete(body, rs, deadline=100.0))
    assert rec.sent == []
    router._routing = CONF.gateway.routing.model_copy(
        update={"max_attempts": 1, "attempt_timeout_s": 7.0, "total_timeout_s": 9.0}
    )
    assert router.deadline(SimpleNamespace(timeout=None)) == 9.0  # type: ignore[arg-type]
    rs = RouteState(Plan(candidates=[]))
    rs.plan.targets = [TARGETS[0]]
    with pytest.raises(UpstreamsFailed):
        asyncio.run(router.complete(body, rs, deadline=100.0))
    assert [kw["read_timeout"] for kw in rec.sent] == [min(7.0, TARGETS[0].timeout or 1e9)]


def test_admit_makes_the_route_state_it_did() -> None:
    admitted = SimpleNamespace(
        plan=Plan(candidates=[]), lease=object(), headers=[("x-ratelimit-limit", "1")]
    )

    class Admission:
        async def admit(self, *args: Any, **kw: Any) -> Any:
            return admitted

    router, _ = _router(0.0)
    router._admission = Admission()  # type: ignore[assignment]
    needs = SimpleNamespace(content_parts=False)
    rs = asyncio.run(router.admit(needs, None))  # type: ignore[arg-type]
    want = RouteState(admitted.plan, lease=admitted.lease, headers=admitted.headers)  # type: ignore[arg-type]
    want.content_parts = False
    assert rs == want
    assert rs.attempts is not rs.outcomes and rs.attempts is not rs.adaptations


def test_session_key_takes_the_affinitys_prefix() -> None:
    router, _ = _router(0.0)
    assert router.session({}, None, {}) is None  # affinity off
    body = {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]}
    for prefix in (0, 1, 2):
        affine = Router(
            CONF,
            {},
            MemoryState(CONF.gateway.breaker),
            affinity=SimpleNamespace(prefix_messages=prefix),  # type: ignore[arg-type]
        )
        assert affine.session({}, None, body) == session_key({}, None, body, prefix)
