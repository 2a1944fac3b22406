"""``Admission.admit`` makes the usual ticket (no key to ask about, no flight to take) without
``_ticket``'s call: the ticket ``_ticket`` makes; with a key or a spread, ``_ticket`` itself."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from gateway.catalogue.catalogue import Config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.schema import BreakerConfig, KeyLimits, SpreadConfig
from gateway.errors import GatewayError
from gateway.state.base import Ticket, View
from gateway.state.memory import MemoryState
from gateway.tenancy.auth import Caller
from gateway.tenancy.keys import KeySpec, new_key
from gateway.tenancy.limits import Admission
from tests.support.catalogue import make_config, make_target, make_variant
from tests.unit.test_admission_inline import CONFIG, T0


class Seen(MemoryState):
    """The memory backend, keeping the tickets it was asked about."""

    def __init__(self) -> None:
        super().__init__(BreakerConfig())
        self.tickets: list[Ticket] = []

    async def before(self, ticket: Ticket, now: float) -> View:
        self.tickets.append(ticket)
        return await super().before(ticket, now)


class Called(Admission):
    """Counts ``_ticket``'s calls."""

    calls = 0

    def _ticket(self, *args: Any, **kw: Any) -> Ticket:
        Called.calls += 1
        return super()._ticket(*args, **kw)


async def _admit(
    adm: Admission, config: Config, body: dict[str, Any], caller: Caller | None, **kw: Any
) -> bool:
    try:
        await adm.admit(resolve_needs(body, {}, config), caller, **kw)
    except GatewayError:
        return False
    return True


@pytest.mark.parametrize("seed", range(4))
def test_the_usual_ticket_is_what_ticket_makes(seed: int) -> None:
    async def go() -> int:
        rng = random.Random(seed)
        state = Seen()
        adm = Called(CONFIG, state, wall=lambda: T0)
        made = 0
        for _ in range(60):
            body = {
                "model": rng.choice(["auto", "v1", "v2"]),
                "messages": [{"role": "user", "content": "x" * rng.randint(1, 3000)}],
                "max_tokens": rng.choice([16, 200, 900]),
            }
            session, reserve = rng.choice(["", "s1"]), rng.random() < 0.8
            try:  # what _ticket makes of the plan admit is about to make
                needs = resolve_needs(body, {}, CONFIG)
                asked = adm._plan(needs, T0, explain=not reserve)
                if not asked.targets:
                    asked = adm._plan(needs, T0, stateless=True)
                head = adm._head(asked)
            except GatewayError:
                continue
            movable = head.movable if session else ()
            want = adm._ticket(needs, asked, None, None, reserve, T0, session, movable, head)
            calls, state.tickets[:] = Called.calls, []
            try:
                await adm.admit(resolve_needs(body, {}, CONFIG), None, reserve=reserve,
                                session=session)  # fmt: skip
            except GatewayError:
                continue
            if not state.tickets:
                continue
            assert Called.calls == calls  # made inline
            got = state.tickets[0]
            assert got == want and type(got) is Ticket
            made += 1
        return made

    assert asyncio.run(go()) > 30


def test_a_key_or_a_spread_goes_through_ticket() -> None:
    async def go() -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        _, record = new_key(KeySpec(name="k", max_in_flight=2), KeyLimits(), time.time())
        state = Seen()
        await state.put_key(record)
        adm = Called(CONFIG, state)
        calls = Called.calls
        assert await _admit(adm, CONFIG, body, Caller(record.id, record))
        assert Called.calls == calls + 1
        assert state.tickets[-1].key is not None and state.tickets[-1].key.slot
        assert await _admit(adm, CONFIG, body, Caller(record.id, record), reserve=False)
        assert Called.calls == calls + 1 and state.tickets[-1].key is None  # not reserving

        v = make_variant("glm-4-9b")
        twins = [make_target("a", v), make_target("b", v)]
        spread = make_config(twins, spread=SpreadConfig(enabled=True))
        state = Seen()
        adm = Called(spread, state)
        body["model"] = "glm-4-9b"
        assert await _admit(adm, spread, body, None)
        assert Called.calls == calls + 2 and state.tickets[-1].flight is not None

    asyncio.run(go())


def test_only_the_memory_backend_itself_is_looked_at_without_a_coroutine() -> None:
    # A subclass may change before (Seen does): it is awaited as any other backend's.
    plain = Admission(CONFIG, MemoryState(BreakerConfig()))
    assert plain._look is not None and plain._look.__self__ is plain._state  # type: ignore[attr-defined]
    assert Admission(CONFIG, Seen())._look is None


@pytest.mark.parametrize("seed", range(3))
def test_look_is_before(seed: int) -> None:
    rng = random.Random(seed)
    a, b = MemoryState(BreakerConfig()), MemoryState(BreakerConfig())
    adm = Admission(CONFIG, a, wall=lambda: T0)
    for _ in range(40):
        body = {
            "model": rng.choice(["auto", "v1", "v2"]),
            "messages": [{"role": "user", "content": "x" * rng.randint(1, 3000)}],
        }
        needs = resolve_needs(body, {}, CONFIG)
        try:
            p = adm._plan(needs, T0)
        except GatewayError:
            continue
        if not p.targets:
            continue
        head = adm._head(p)
        ticket = adm._ticket(needs, p, None, None, rng.random() < 0.8, T0, "", (), head)
        now = T0 + rng.random()
        assert a.look(ticket, now) == asyncio.run(b.before(ticket, now))
