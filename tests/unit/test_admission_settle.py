"""Settlement's shortcuts: ``Admission.settle`` with one attempt (no comprehension) reports
what the general formula reports, and ``MemoryState.apply`` returning early for a lease that
holds nothing leaves the state the full settlement leaves."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.loader import default_config_dir, load_config
from gateway.catalogue.schema import BreakerConfig
from gateway.catalogue.target import Target
from gateway.state.base import DeploymentAsk, FlightAsk, KeyAsk, Lease, Outcome, Report, Ticket
from gateway.state.memory import MemoryState
from gateway.tenancy.keys import KeyRecord
from gateway.tenancy.limits import Admission

CONFIG = load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9")
NOW = 1_000_000.5
IDS = ("a", "b")


def full_apply(state: MemoryState, report: Report, now: float) -> None:
    """``MemoryState.apply`` as it was before its early return: always through ``_settle``."""
    for o in report.outcomes:
        c = state._circuits.get(o.target_id) or state._circuit(o.target_id)
        c.record(state._cfg, o, now)
        if c.latency is not None:
            state._latency[o.target_id] = c.latency
        if c.trips:
            state._tripped[o.target_id] = None
        else:
            state._tripped.pop(o.target_id, None)
    lease = report.lease
    skip = lease.deployment if lease is not None else None
    for tid in report.attempts:
        if tid == skip:
            skip = None
            continue
        state._window("d", tid, "r").add(now, 1)
    if lease is None:
        if report.answered_by and report.tokens:
            state._window("d", report.answered_by, "t").add(now, report.tokens)
        return
    state._settle(report, lease, now, first_attempted=skip is None)


def snapshot(state: MemoryState) -> Any:
    return (
        {k: dict(w.buckets) for k, w in state._windows.items()},
        dict(state._spend),
        {k: dict(v) for k, v in state._slots.items()},
        {k: dict(v) for k, v in state._flights.items()},
        {t: (c.probe_until, c.latency, c.trips) for t, c in state._circuits.items()},
    )


async def prepared(key: bool, flight: bool, probe: bool) -> tuple[MemoryState, Lease | None]:
    state = MemoryState(BreakerConfig(failure_threshold=1, cooldown_s=1))
    if key:
        await state.put_key(KeyRecord("k", "k", "h", "sk-glm-k", 0.0, budget_usd=1000.0))
    if probe:  # tripped and half-open by NOW: the lease takes its probe
        state.apply(Report((Outcome("a", False, 0.1, "server"),)), NOW - 5)
    ticket = Ticket(
        (DeploymentAsk("a"), DeploymentAsk("b", 100)),
        50,
        KeyAsk("k", cost_micros=10, max_in_flight=3, slot="s1", hold_s=60) if key else None,
        True,
        FlightAsk(IDS, "f1", 60) if flight else None,
    )
    view = await state.before(ticket, NOW)
    return state, view.lease


@settings(max_examples=150, deadline=None)
@given(
    key=st.booleans(),
    flight=st.booleans(),
    probe=st.booleans(),
    answered=st.sampled_from([None, "a", "b"]),
    tokens=st.integers(0, 200),
    cost=st.integers(0, 50),
    outcomes=st.lists(st.sampled_from(IDS), max_size=2),
    attempts=st.lists(st.sampled_from(IDS), max_size=2),
    no_lease=st.booleans(),
)
def test_apply_leaves_what_the_full_settlement_leaves(
    key: bool,
    flight: bool,
    probe: bool,
    answered: str | None,
    tokens: int,
    cost: int,
    outcomes: list[str],
    attempts: list[str],
    no_lease: bool,
) -> None:
    quick, lease = asyncio.run(prepared(key, flight, probe))
    slow, _ = asyncio.run(prepared(key, flight, probe))
    report = Report(
        tuple(Outcome(t, True, 0.2) for t in outcomes),
        tuple(attempts),
        None if no_lease else lease,
        answered,
        tokens,
        cost,
    )
    quick.apply(report, NOW + 1)
    full_apply(slow, report, NOW + 1)
    assert snapshot(quick) == snapshot(slow)


def test_the_usual_lease_is_settled_without_a_trace() -> None:
    state, lease = asyncio.run(prepared(False, False, False))
    assert lease is not None and lease.deployment is None and lease.key_id is None
    before = snapshot(state)
    state.apply(Report((), (), lease, None, 120, 0), NOW + 1)
    assert snapshot(state) == before


class Recorder:
    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def after(self, report: Report, now: float) -> None:
        self.reports.append(report)


def limited(t: Target, rpm: int | None, tpm: int | None) -> Target:
    return dataclasses.replace(t, rpm=rpm, tpm=tpm)


TARGETS = CONFIG.catalogue.targets[:3]
targets = st.builds(
    limited,
    st.sampled_from(TARGETS),
    st.none() | st.integers(1, 100),
    st.none() | st.integers(1, 10_000),
)


@settings(max_examples=150, deadline=None)
@given(attempted=st.lists(targets, max_size=3), answered=st.none() | targets)
def test_settle_reports_the_deployments_with_limits_of_their_own(
    attempted: list[Target], answered: Target | None
) -> None:
    recorder = Recorder()
    adm = Admission(CONFIG, recorder, wall=lambda: NOW)  # type: ignore[arg-type]
    lease = Lease(None, 0, 10)
    asyncio.run(adm.settle(lease, (), attempted, answered, None))  # type: ignore[arg-type]
    (report,) = recorder.reports
    want = tuple(t.id for t in attempted if t.rpm is not None or t.tpm is not None)
    assert report.attempts == want
    own = answered is not None and (answered.rpm is not None or answered.tpm is not None)
    assert report.answered_by == (answered.id if own and answered else None)
