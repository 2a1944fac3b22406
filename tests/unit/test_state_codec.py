"""The Redis codec's hand-written fast paths against the plain way of writing them.

``encode_report`` writes only the fields that are set, without a generic compaction pass;
``decode_view`` builds its View and Lease positionally. Both must mean exactly what the plain
version means: the same JSON document for the Lua scripts, the same View for the planner.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import (
    DeploymentAsk,
    FlightAsk,
    KeyAsk,
    Lease,
    Outcome,
    Pin,
    Report,
    Saturation,
    Ticket,
    View,
)
from gateway.state.codec import (
    CANDIDATES_KEPT,
    _cands_parts,
    _verdict,
    decode_view,
    encode_report,
    encode_ticket,
)

ids = st.sampled_from(["zai/glm-4.7", "vllm/glm-4-9b", "d/x"])
maybe_float = st.none() | st.floats(0, 1e6, allow_nan=False)
outcomes = st.builds(
    Outcome,
    ids,
    st.booleans(),
    st.floats(0, 100, allow_nan=False),
    st.none() | st.sampled_from(["transient", "rate_limited"]),
    maybe_float,
    st.booleans(),
)
leases = st.builds(
    Lease,
    st.none() | st.just("k1"),
    st.integers(0, 2**40),
    st.integers(0, 10**6),
    st.integers(0, 10**9),
    st.sampled_from(["total", "2026-12"]),
    st.sampled_from([math.inf, 1.9e9]),
    st.none() | ids,
    st.lists(ids, max_size=3).map(tuple),
    st.booleans(),
    st.none() | st.just("slot-1"),
    st.none() | st.tuples(ids, st.just("fs-1")),
)
reports = st.builds(
    Report,
    st.lists(outcomes, max_size=3).map(tuple),
    st.lists(ids, max_size=3).map(tuple),
    st.none() | leases,
    st.none() | ids,
    st.integers(0, 10**6),
    st.integers(0, 10**9),
    st.sampled_from(["", "ab6bf50dcd3b8172-f9", "other"]),
)


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def plain_report(report: Report) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "outcomes": [
            _compact(
                {
                    "id": o.target_id,
                    "ok": o.ok,
                    "lat": o.latency_s,
                    "cls": o.failure_class,
                    "cd": o.cooldown_s,
                }
            )
            for o in report.outcomes
        ],
        "attempts": list(report.attempts) or None,  # what is empty or 0 is left out
        "by": report.answered_by,
        "tokens": report.tokens or None,
        "cost": report.cost_micros or None,
        "rid": report.id or None,
    }
    lease = report.lease
    acts = lease is not None and (lease.key_id, lease.deployment, lease.flight) != (None,) * 3
    if lease is not None and (acts or lease.probes or report.answered_by is not None):
        doc["lease"] = _compact(
            {
                "second": lease.second,
                "tokens": lease.tokens,
                "cost": lease.cost_micros,
                "period": lease.period,
                "probes": list(lease.probes),
                "key": lease.key_id,
                "pend": lease.period_end if math.isfinite(lease.period_end) else None,
                "dep": lease.deployment,
                "slot": lease.slot,
                "fdep": lease.flight[0] if lease.flight else None,
                "fslot": lease.flight[1] if lease.flight else None,
            }
        )
    return _compact(doc)


@settings(max_examples=300, deadline=None)
@given(reports)
def test_encode_report_writes_the_plain_document(report: Report) -> None:
    assert orjson.loads(encode_report(report)) == plain_report(report)


lease_docs = st.fixed_dictionaries(
    {"second": st.integers(0, 2**40), "probes": st.lists(ids, max_size=2)},
    optional={
        "cost": st.integers(0, 10**6),
        "dep": ids,
        "slot": st.just("s1"),
        "fdep": ids,
    },
)
view_docs = st.fixed_dictionaries(
    {},
    optional={
        "ver": st.integers(0, 99),
        "open": st.dictionaries(ids, st.floats(0, 99, allow_nan=False)),
        "lat": st.dictionaries(ids, st.floats(0, 9, allow_nan=False) | st.integers(0, 9)),
        "sat": st.dictionaries(
            ids, st.tuples(st.floats(-1, 60, allow_nan=False), st.just("rpm"), st.integers(1, 99))
        ),
        "verdict": st.fixed_dictionaries({"rpm": st.integers(1, 9)}, optional={"refused": ids}),
        "lease": lease_docs,
        "pin": st.tuples(ids, st.floats(0, 2e9, allow_nan=False)),
        "inf": st.dictionaries(ids, st.integers(0, 9)),
        "use": st.dictionaries(ids, st.floats(0, 1, allow_nan=False)),
    },
)


def plain_view(doc: dict[str, Any], ticket: Ticket) -> View:
    def floats(obj: Any) -> dict[str, float]:
        return {k: float(v) for k, v in obj.items()} if obj else {}

    key = ticket.key
    lease = None
    if "lease" in doc:
        ld = doc["lease"]
        lease = Lease(
            key.key_id if key else None,
            int(ld["second"]),
            ticket.tokens,
            int(ld.get("cost", 0)),
            key.period if key else "total",
            key.period_end if key else math.inf,
            ld.get("dep"),
            tuple(ld.get("probes") or ()),
            slot=ld.get("slot"),
            flight=(str(ld["fdep"]), str(ld["fslot"])) if "fdep" in ld else None,
        )
    pin = doc.get("pin")
    return View(
        floats(doc.get("open")),
        floats(doc.get("lat")),
        {
            t: Saturation(float(s[0]), str(s[1]), int(s[2]))
            for t, s in (doc.get("sat") or {}).items()
        },
        _verdict(doc["verdict"]) if "verdict" in doc else None,
        lease,
        int(doc.get("ver", 0)),
        in_flight={k: int(v) for k, v in (doc.get("inf") or {}).items()},
        pin=Pin(str(pin[0]), float(pin[1])) if pin else None,
        load=floats(doc.get("use")),
    )


@settings(max_examples=300, deadline=None)
@given(view_docs, st.booleans())
def test_decode_view_builds_the_plain_view(doc: dict[str, Any], keyed: bool) -> None:
    if "lease" in doc and "fdep" in doc["lease"]:
        doc["lease"]["fslot"] = "fs-9"
    key = KeyAsk("k1", period="2026-12", period_end=1.9e9) if keyed else None
    ticket = Ticket(tokens=321, key=key)
    got = decode_view(orjson.dumps(doc), ticket)
    assert got == plain_view(doc, ticket)
    assert all(type(v) is float for v in got.latency_s.values())


def plain_ticket(ticket: Ticket, breaker: BreakerConfig) -> dict[str, Any]:
    """The ticket document as it was written before the candidates' part was kept per tuple
    (one dict, every member in it): the reference for :func:`encode_ticket`."""
    cands = ticket.candidates
    doc: dict[str, Any] = {
        "reserve": False if not ticket.reserve else None,  # left out when reserving
        "tokens": ticket.tokens,
        "lease_s": breaker.probe_lease_s,
        "cands": [c.target_id for c in cands],
    }
    lim = {
        c.target_id: _compact({"rpm": c.rpm, "tpm": c.tpm})
        for c in cands
        if c.rpm is not None or c.tpm is not None
    }
    if lim:
        doc["lim"] = lim
    if ticket.session:
        doc["pin"] = ticket.session
        if ticket.pinnable:
            doc["pk"] = list(ticket.pinnable)
    k = ticket.key
    if k is not None:
        doc["key"] = _compact(
            {
                "id": k.key_id,
                "rpm": k.rpm,
                "tpm": k.tpm,
                "budget": k.budget_micros,
                "period": k.period,
                "pend": k.period_end if math.isfinite(k.period_end) else None,
                "cost": k.cost_micros,
                "cheap": k.cheap_cost_micros,
            }
        )
        if k.max_in_flight is not None:
            doc["key"].update(mif=k.max_in_flight, slot=k.slot, hold=k.hold_s)
    f = ticket.flight
    if f is not None:
        doc["fl"] = {"ids": list(f.ids), "slot": f.slot, "hold": f.hold_s}
    return _compact(doc)


maybe_int = st.none() | st.integers(0, 10**7)
asks = st.builds(DeploymentAsk, ids | st.just('q/"quoted\\'), maybe_int, maybe_int)
key_asks = st.builds(
    KeyAsk,
    st.sampled_from(["k1", "ké\n"]),
    maybe_int,
    maybe_int,
    maybe_int,
    st.sampled_from(["total", "2026-12"]),
    st.sampled_from([math.inf, 1.9e9]),
    st.integers(0, 10**6),
    maybe_int,
    maybe_int,
    st.just("slot-1"),
    st.floats(0, 600, allow_nan=False),
)
tickets = st.builds(
    Ticket,
    st.lists(asks, max_size=4).map(tuple),
    st.integers(0, 10**6),
    st.none() | key_asks,
    st.booleans(),
    st.none()
    | st.builds(FlightAsk, st.lists(ids, max_size=3).map(tuple), st.just("fs"), st.just(9.5)),
    st.sampled_from(["", "p0123abcd"]),
    st.lists(ids, max_size=3).map(tuple),
)


def loads_ticket(ticket: Ticket, breaker: BreakerConfig) -> dict[str, Any]:
    """:func:`encode_ticket`'s two documents as one: its own members, then the candidates'."""
    doc, part = encode_ticket(ticket, breaker)
    own, cands = orjson.loads(doc), orjson.loads(part)
    assert not own.keys() & cands.keys()
    assert cands.keys() <= {"cands", "lim", "pk", "lease_s"}
    return {**own, **cands}


@settings(max_examples=300)
@given(tickets, st.booleans())
def test_encode_ticket_writes_the_plain_document(ticket: Ticket, again: bool) -> None:
    breaker = BreakerConfig()
    if again:  # the candidates' part from the kept copy
        encode_ticket(ticket, breaker)
    assert loads_ticket(ticket, breaker) == plain_ticket(ticket, breaker)


def test_the_candidates_part_is_kept_per_tuple_not_per_equal_tuple() -> None:
    breaker = BreakerConfig()
    one = (DeploymentAsk("a/x", 5),)
    first = loads_ticket(Ticket(one, 1), breaker)
    other = (DeploymentAsk("b/y"),)
    second = loads_ticket(Ticket(other, 1), breaker)
    assert (first["cands"], first["lim"]) == (["a/x"], {"a/x": {"rpm": 5}})
    assert second["cands"] == ["b/y"] and "lim" not in second
    pinned = loads_ticket(Ticket(one, 1, session="s", pinnable=("a/x",)), breaker)
    assert pinned["pk"] == ["a/x"]  # a part of its own: the same candidates, pinnable ones
    assert "pk" not in loads_ticket(Ticket(one, 1, pinnable=("a/x",)), breaker)  # no session
    for i in range(CANDIDATES_KEPT + 3):  # the copies are bounded
        encode_ticket(Ticket((DeploymentAsk(f"c/{i}"),), 1), breaker)
    assert len(_cands_parts) <= CANDIDATES_KEPT
    assert loads_ticket(Ticket(one, 1), breaker)["cands"] == ["a/x"]
