"""``Admission.admit``'s usual cases written inline (the plan with nothing blocked, the plan
head's hit, the snapshot with nothing open or full, ``Admitted`` written slot by slot) admit
what the general calls admit: :class:`General` is ``admit`` and ``_decide`` as they were at
0639c4d, before the inlining, run beside the real one over the same random steps."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.schema import BreakerConfig
from gateway.errors import GatewayError
from gateway.observability.timing import StageTimes
from gateway.routing.affinity import put_first
from gateway.state.base import Outcome, Pin, Report, View
from gateway.state.memory import MemoryState
from gateway.tenancy.auth import Caller
from gateway.tenancy.limits import (
    _NOTHING_BLOCKED,
    Admission,
    Admitted,
    Needs,
    Plan,
    Ticket,
    _Cheap,
    _NothingLeft,
)
from tests.support.catalogue import make_config, make_target, make_variant

V1, V2 = make_variant("v1", quality=60), make_variant("v2", quality=50)
TARGETS = [
    make_target("p", V1, price=(1.0, 1.0)),
    make_target("q", V1, price=(0.5, 0.5), rpm=2),
    make_target("r", V1, price=(2.0, 2.0)),
    make_target("s", V2, price=(0.5, 0.5), tpm=400),
    make_target("t", V2, price=(3.0, 3.0)),
]
CONFIG = make_config(TARGETS, max_attempts=3)
IDS = [t.id for t in TARGETS]
T0 = 1_900_000_000.0


class General(Admission):
    """``admit`` and ``_decide`` as at 0639c4d (every step through its own call)."""

    async def admit(
        self,
        needs: Needs,
        caller: Caller | None,
        *,
        reserve: bool = True,
        times: StageTimes | None = None,
        session: str = "",
    ) -> Admitted:
        now = self._wall()
        record = None
        snap = self._snap
        assumed = _NOTHING_BLOCKED if snap.clear else snap.blocked_ids(now)
        first = self._plan(needs, now, explain=not reserve, advance=reserve)
        asked = first if first.targets else self._plan(needs, now, stateless=True)
        if not asked.targets:
            return Admitted(first)
        head = self._head(asked)
        movable = head.movable if session else ()
        ticket = self._ticket(needs, asked, record, None, reserve, now, session, movable, head)
        view = await self._state.before(ticket, now)
        snap.update(view, ticket.candidates, now)
        try:
            return self._decide(needs, view, ticket, None, first, assumed, now)
        except _NothingLeft as left:
            needs = left.needs
        await self._release(view.lease, now)
        raise self._unavailable(needs, view, now)

    def _decide(
        self,
        needs: Needs,
        view: View,
        ticket: Ticket,
        cheap: _Cheap | None,
        first: Plan,
        assumed: frozenset[str],
        now: float,
    ) -> Admitted:
        headers: list[tuple[str, str]] = []
        final = first
        if (
            _NOTHING_BLOCKED if self._snap.clear else self._snap.blocked_ids(now)
        ) != assumed or not first.targets:
            final = self._plan(needs, now, explain=not ticket.reserve, advance=ticket.reserve)
        if not final.targets and ticket.reserve:
            raise _NothingLeft(needs)
        pin_first = put_first(final.targets, view.pin, ticket.pinnable, view)
        pin_choice = len(ticket.pinnable) > 1
        return Admitted(
            final, view.lease, headers, view.pin, not view.degraded, pin_first, pin_choice
        )


def fields(a: Admitted) -> tuple[object, ...]:
    return (
        [t.id for t in a.plan.targets],
        a.lease,
        a.headers,
        a.pin,
        a.pin_known,
        a.pin_first,
        a.pin_choice,
    )


def snapshot(adm: Admission) -> tuple[object, ...]:
    s = adm._snap
    return (dict(s._open), dict(s._full), dict(s.latency), s.clear)


async def run(seed: int) -> int:
    rng = random.Random(seed)
    clock = [T0]
    states = [MemoryState(BreakerConfig(failure_threshold=1, cooldown_s=2)) for _ in "ab"]
    real = Admission(CONFIG, states[0], wall=lambda: clock[0])
    ref = General(CONFIG, states[1], wall=lambda: clock[0])
    compared = 0
    for _ in range(80):
        clock[0] += rng.choice([0.0, 0.3, 1.1, 2.5])
        body = {
            "model": rng.choice(["auto", "v1", "v2"]),
            "messages": [{"role": "user", "content": "x" * rng.randint(1, 800)}],
            "max_tokens": rng.choice([16, 200]),
        }
        session = rng.choice(["", "s1", "s2"])
        reserve = rng.random() < 0.85
        if rng.random() < 0.2:
            pin = Pin(rng.choice(IDS), clock[0] + 30)
            for st in states:
                st.keep_pin(session or "s1", pin, clock[0])
        got: list[object] = []
        for adm in (real, ref):
            needs = resolve_needs(body, {}, CONFIG)
            try:
                a = await adm.admit(needs, None, reserve=reserve, session=session)
                got.append(fields(a))
            except GatewayError as err:
                got.append((type(err), err.status, str(err)))
        assert got[0] == got[1]
        assert snapshot(real) == snapshot(ref)
        compared += 1
        tid = rng.choice(IDS)
        ok = rng.random() < 0.6
        report = Report((Outcome(tid, ok, 0.1 * rng.randint(1, 9), None if ok else "server"),))
        for st in states:
            st.apply(report, clock[0])
    return compared


@pytest.mark.parametrize("seed", range(8))
def test_the_inline_admission_admits_what_the_general_one_does(seed: int) -> None:
    assert asyncio.run(run(seed)) == 80
