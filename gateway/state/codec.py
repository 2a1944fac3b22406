"""JSON in and out of the Lua scripts (:mod:`gateway.state.lua`).

Absent values are left out rather than sent as ``null`` (cjson turns null into a truthy value).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import (
    LATENCY_ALPHA,
    DeploymentAsk,
    KeyVerdict,
    Lease,
    Outcome,
    Report,
    Saturation,
    Ticket,
    View,
    new_lease,
    new_pin,
    new_view,
)
from gateway.state.circuits import error_bucket_s


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _limits(c: DeploymentAsk) -> dict[str, int]:
    return _compact({"rpm": c.rpm, "tpm": c.tpm})


CANDIDATES_KEPT = 256
"""Candidate tuples whose part of the ticket is kept (admission reuses one tuple per plan head,
and one tuple of pinnable candidates per head, so a handful in practice)."""
_Kept = tuple[tuple[DeploymentAsk, ...], tuple[str, ...], bytes]
_cands_parts: dict[tuple[int, int, float], _Kept] = {}
"""(id(candidates), id(pinnable), probe lease) -> (them, it, their part as JSON): both tuples
are held so that their ids stay their own."""


def _cands_part(
    cands: tuple[DeploymentAsk, ...], pinnable: tuple[str, ...], lease_s: float
) -> bytes:
    key = (id(cands), id(pinnable), lease_s)
    got = _cands_parts.get(key)
    if got is not None and got[0] is cands and got[1] is pinnable:
        return got[2]
    doc: dict[str, Any] = {"cands": [c.target_id for c in cands], "lease_s": lease_s}
    lim = {c.target_id: _limits(c) for c in cands if c.rpm is not None or c.tpm is not None}
    if lim:  # with their own
        doc["lim"] = lim
    if pinnable:
        doc["pk"] = pinnable
    part = orjson.dumps(doc)
    if len(_cands_parts) >= CANDIDATES_KEPT:
        _cands_parts.clear()
    _cands_parts[key] = (cands, pinnable, part)
    return part


def encode_ticket(ticket: Ticket, breaker: BreakerConfig) -> tuple[bytes, bytes]:
    """The ticket as two JSON documents: its own members, and its candidates' part
    (``cands``, ``lim``, ``pk`` with a session, and the probe lease ``lease_s``), written
    once per tuple and sent as the same bytes each time, which the script decodes once per
    call (a batch's tickets share a plan head's)."""
    doc: dict[str, Any] = {"tokens": ticket.tokens}
    if not ticket.reserve:  # (reserving is the usual case: not written)
        doc["reserve"] = False
    if ticket.session:
        doc["pin"] = ticket.session
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
    pinnable = ticket.pinnable if ticket.session else ()
    return orjson.dumps(doc), _cands_part(ticket.candidates, pinnable, breaker.probe_lease_s)


def breaker_doc(breaker: BreakerConfig) -> bytes:
    """The breaker settings as the ``after`` script reads them (one argument of a call,
    beside its reports: build once)."""
    return orjson.dumps(
        {
            "threshold": breaker.failure_threshold,
            "cooldown": breaker.cooldown_s,
            "maxc": breaker.max_cooldown_s,
            "maxe": breaker.max_explicit_cooldown_s,
            "rate": breaker.error_rate,
            "wsize": error_bucket_s(breaker),
            "wmin": breaker.error_min_requests,
            "alpha": LATENCY_ALPHA,
        }
    )


def encode_report(report: Report) -> bytes:
    """Only what the script acts on: no empty ``attempts``, no zero ``tokens`` or ``cost``,
    and no lease that releases and charges nothing (no key, deployment window, flight slot or
    probe, and no ``by``); each value costs the script ~1.5k instructions to read."""
    doc: dict[str, Any] = {"outcomes": [_outcome(o) for o in report.outcomes]}
    if report.attempts:
        doc["attempts"] = report.attempts  # a tuple: written as a JSON array
    if report.tokens:
        doc["tokens"] = report.tokens
    if report.cost_micros:
        doc["cost"] = report.cost_micros
    if report.answered_by is not None:
        doc["by"] = report.answered_by
    if report.id:
        doc["rid"] = report.id
    lease = report.lease
    if lease is not None and (
        lease.key_id is not None
        or lease.deployment is not None
        or lease.flight
        or lease.probes
        or report.answered_by is not None
    ):
        ld: dict[str, Any] = {
            "second": lease.second,
            "tokens": lease.tokens,
            "cost": lease.cost_micros,
            "period": lease.period,
            "probes": lease.probes,
        }
        if lease.key_id is not None:
            ld["key"] = lease.key_id
        if math.isfinite(lease.period_end):
            ld["pend"] = lease.period_end
        if lease.deployment is not None:
            ld["dep"] = lease.deployment
        if lease.slot is not None:
            ld["slot"] = lease.slot
        if lease.flight:
            ld["fdep"], ld["fslot"] = lease.flight
        doc["lease"] = ld
    return orjson.dumps(doc)


def _outcome(o: Outcome) -> dict[str, Any]:
    d: dict[str, Any] = {"id": o.target_id, "ok": o.ok, "lat": o.latency_s}
    if o.failure_class is not None:
        d["cls"] = o.failure_class
    if o.cooldown_s is not None:
        d["cd"] = o.cooldown_s
    return d


def _floats(obj: Any) -> dict[str, float]:
    """A map of numbers; ``{}`` for an empty one (cjson writes an empty table as ``{}``,
    which orjson reads back as an empty dict either way)."""
    if not obj or not isinstance(obj, dict):
        return {}
    return {k: float(v) for k, v in obj.items()}


def decode_view(raw: bytes | str, ticket: Ticket) -> View:
    doc = orjson.loads(raw)
    get = doc.get
    sat = get("sat")
    saturated = (
        {tid: Saturation(float(s[0]), str(s[1]), int(s[2])) for tid, s in sat.items()}
        if sat and isinstance(sat, dict)
        else {}
    )
    v = get("verdict")
    ld = get("lease")
    pin = get("pin")
    inf = get("inf")
    return new_view(  # positional (hot path): the fields in their order
        _floats(get("open")),
        _floats(get("lat")),
        saturated,
        _verdict(v) if v is not None else None,
        _lease(ld, ticket) if ld is not None else None,
        int(get("ver", 0)),
        False,
        {k: int(n) for k, n in inf.items()} if inf and isinstance(inf, dict) else {},
        new_pin(str(pin[0]), float(pin[1])) if isinstance(pin, list) else None,
        _floats(get("use")),
    )


def _verdict(v: dict[str, Any]) -> KeyVerdict:
    return KeyVerdict(
        v.get("refused"),
        float(v.get("retry", 0)),
        bool(v.get("downgraded", False)),
        _int(v.get("rpm")),
        int(v.get("rpm_left", 0)),
        float(v.get("rpm_reset", 0)),
        _int(v.get("tpm")),
        int(v.get("tpm_left", 0)),
        float(v.get("tpm_reset", 0)),
        _int(v.get("budget")),
        int(v.get("spend", 0)),
        int(v.get("reserved", 0)),
        _int(v.get("mif")),
        int(v.get("held", 0)),
    )


def _lease(doc: dict[str, Any], ticket: Ticket) -> Lease:
    key = ticket.key
    get = doc.get
    fdep = get("fdep")
    probes = get("probes")  # an empty one comes as {} (cjson's empty table)
    return new_lease(  # positional (hot path): the fields in their order
        key.key_id if key else None,
        int(doc["second"]),
        ticket.tokens,
        int(get("cost", 0)),
        key.period if key else "total",
        key.period_end if key else math.inf,
        get("dep"),
        tuple(probes) if probes and isinstance(probes, list) else (),
        True,
        get("slot"),
        (str(fdep), str(doc["fslot"])) if fdep is not None else None,
    )


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def decode_health_row(row: dict[str, Any]) -> dict[str, Any]:
    """Numbers out of a circuit hash as the HEALTH script returns it."""

    def num(name: str) -> float:
        try:
            return float(row.get(name) or 0)
        except ValueError:
            return 0.0

    return {
        "consecutive": int(num("consecutive")),
        "trips": int(num("trips")),
        "open_until": num("open_until"),
        "lat": float(row["lat"]) if row.get("lat") else None,
        "requests": int(num("requests")),
        "failures": int(num("failures")),
        "last_failure": row.get("last_failure") or None,
        "wr": int(num("wr")),
        "wf": int(num("wf")),
    }
