"""In-memory StateStore: the embedded default for one process (and Redis's local fallback).

Every method runs without awaiting, so each call is atomic on the event loop, as a Lua script
is on Redis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import (
    MAX_PINS,
    RATE_WINDOW,
    REFUSED_BUDGET,
    REFUSED_CONCURRENCY,
    REFUSED_REVOKED,
    REFUSED_RPM,
    REFUSED_TPM,
    RESERVE_WINDOW,
    DeploymentAsk,
    Health,
    KeyAsk,
    KeyVerdict,
    Lease,
    Pin,
    Report,
    Saturation,
    Ticket,
    View,
    new_lease,
    new_view,
)
from gateway.state.circuits import Circuit, error_bucket_s
from gateway.state.windows import Window
from gateway.tenancy.keys import KeyRecord

PLAIN_KEPT = 4096
"""Candidate tuples whose plainness :class:`MemoryState` remembers (a few per plan head)."""


class MemoryState:
    """Circuits, limit windows, spend and key records of one process."""

    def __init__(self, breaker: BreakerConfig) -> None:
        self._cfg = breaker
        self._bucket_s = error_bucket_s(breaker)
        self._circuits: dict[str, Circuit] = {}
        self._tripped: dict[str, None] = {}
        """Ids of the circuits that tripped (``trips > 0``), in the order they did: the only
        ones that can refuse a caller (open, or their probe out), so ``before`` looks at these,
        not at every circuit."""
        self._windows: dict[str, Window] = {}
        self._spend: dict[tuple[str, str], int] = {}
        self._slots: dict[str, dict[str, float]] = {}
        """key id -> slot id -> when the slot expires (requests in flight)."""
        self._flights: dict[str, dict[str, float]] = {}
        """deployment id -> slot id -> when the slot expires (spread deployments)."""
        self._keys: dict[str, KeyRecord] = {}
        self._keys_version = 0
        self._pins: dict[str, Pin] = {}
        self._latency: dict[str, float] = {}
        """Target id -> its circuit's latency, for the circuits that have one (kept by
        :meth:`apply`, the one place a circuit's latency changes)."""
        self._plain: dict[
            int, tuple[tuple[DeploymentAsk, ...], tuple[str, ...] | None, frozenset[str]]
        ] = {}
        """id(candidates) -> (candidates, their ids if none has limits of its own, the ids as a
        set: what the latencies are looked up in when fewer are known than asked about)."""

    @property
    def degraded(self) -> bool:
        return False

    # --- before / after ----------------------------------------------------------------------

    async def before(self, ticket: Ticket, now: float) -> View:
        return self.look(ticket, now)

    def look(self, ticket: Ticket, now: float) -> View:
        """:meth:`before`, callable from synchronous code: Admission calls it on this backend
        (awaiting :meth:`before` suspends nothing either; its coroutine costs ~2,900
        instructions per request)."""
        opened = self._open(now) if self._tripped else {}
        pin = self._pins.get(ticket.session) if ticket.session else None
        if pin is not None and pin.until <= now:  # lapsed (as :meth:`pin` answers)
            pin = None
        candidates, flight = ticket.candidates, ticket.flight
        plain = None
        if not opened and flight is None:
            known = self._plain.get(id(candidates))  # _plain_ids' hit, without its call
            plain = self._plain_ids(candidates) if known is None else known[1]
        if plain is not None:
            # The usual case: nothing open, no limits of its own: every candidate is available.
            # Every reader of View.latency_s only looks keys up (Snapshot.latency -> the
            # planner's .get): key order is not part of it, so walk the smaller side.
            lat = self._latency
            if not lat:
                latency = {}
            elif len(lat) < len(plain):
                ids = self._plain[id(candidates)][2]
                if ids.issuperset(lat):  # usually: the few that answered are among these
                    latency = lat.copy()
                else:
                    latency = {tid: v for tid, v in lat.items() if tid in ids}
            else:
                latency = {tid: lat[tid] for tid in plain if tid in lat}
            saturated: dict[str, Saturation] = {}
            load: dict[str, float] = {}
            available = list(candidates)
        else:
            latency, saturated, load, available = self._look(ticket, opened, now)
        if pin is not None and pin.target_id in ticket.pinnable:  # it goes first if available
            for i, ask in enumerate(available):
                if ask.target_id == pin.target_id:
                    if i:
                        available.insert(0, available.pop(i))
                    break
        flying = self._flying(ticket, now) if flight is not None else {}
        verdict, lease = None, None
        if available:
            key = ticket.key
            if key is None and plain is not None and not self._tripped:
                # No key, nothing with limits, no probe to take: nothing to count, the lease
                # only carries the tokens (what :meth:`_take` gives then, without its walk).
                if ticket.reserve:
                    lease = new_lease(
                        None, math.floor(now), ticket.tokens, 0, "total", math.inf, None, (),
                        True, None, None,
                    )  # fmt: skip
            else:
                verdict = self._judge(key, ticket.tokens, now) if key else None
                if ticket.reserve and (verdict is None or not verdict.refused):
                    lease = self._take(ticket, verdict, available, now)
                    if lease.flight is not None:
                        flying[lease.flight[0]] += 1
        # Positional (every field, in order): keywords cost a dataclass __init__ ~0.1 µs.
        return new_view(
            opened, latency, saturated, verdict, lease, self._keys_version, False, flying, pin, load
        )

    def _plain_ids(self, candidates: tuple[DeploymentAsk, ...]) -> tuple[str, ...] | None:
        """The candidates' ids when none has limits of its own (nothing to count or check for
        them), else None: decided once per candidates tuple (admission reuses them per plan
        head). The entry holds its tuple, so its id is not reused while it is kept."""
        got = self._plain.get(id(candidates))
        if got is None:
            unlimited = all(a.rpm is None and a.tpm is None for a in candidates)
            ids = tuple([a.target_id for a in candidates]) if unlimited else None
            if len(self._plain) >= PLAIN_KEPT:
                self._plain.clear()
            got = self._plain[id(candidates)] = (candidates, ids, frozenset(ids or ()))
        return got[1]

    def _look(
        self, ticket: Ticket, opened: dict[str, float], now: float
    ) -> tuple[dict[str, float], dict[str, Saturation], dict[str, float], list[DeploymentAsk]]:
        """Each candidate's latency, saturation and load; the available ones, in order."""
        latency: dict[str, float] = {}
        saturated: dict[str, Saturation] = {}
        load: dict[str, float] = {}
        available: list[DeploymentAsk] = []
        circuits, flight = self._circuits, ticket.flight
        for ask in ticket.candidates:
            tid = ask.target_id
            c = circuits.get(tid)
            if c is not None and c.latency is not None:
                latency[tid] = c.latency
            if opened and tid in opened:
                continue
            if ask.rpm is None and ask.tpm is None:  # no limits of its own: nothing to count
                available.append(ask)
                continue
            sat = self._saturation(ask, ticket.tokens, now)
            if sat is not None:
                saturated[tid] = sat
            else:
                available.append(ask)
                if flight is not None and tid in flight.ids:
                    use = self._load(ask, now)
                    if use > 0:
                        load[tid] = use
        return latency, saturated, load, available

    async def after(self, report: Report, now: float) -> None:
        self.apply(report, now)

    def apply(self, report: Report, now: float) -> None:
        """:meth:`after`, callable from synchronous code (the Redis backend's fallback)."""
        tripped, circuits = self._tripped, self._circuits
        for o in report.outcomes:
            c = circuits.get(o.target_id) or self._circuit(o.target_id)
            c.record(self._cfg, o, now)
            if c.latency is not None:
                self._latency[o.target_id] = c.latency
            if c.trips:
                tripped[o.target_id] = None
            else:
                tripped.pop(o.target_id, None)
        lease = report.lease
        skip = lease.deployment if lease is not None else None
        for tid in report.attempts:
            if tid == skip:
                skip = None
                continue
            self._window("d", tid, "r").add(now, 1)
        if lease is None:
            if report.answered_by and report.tokens:
                self._window("d", report.answered_by, "t").add(now, report.tokens)
            return
        if (
            lease.deployment is None
            and lease.key_id is None
            and lease.flight is None
            and not lease.probes
            and not report.answered_by
        ):
            return  # the usual lease (no key, nothing with limits, no probe): nothing held
        self._settle(report, lease, now, skip is None)

    def _settle(self, report: Report, lease: Lease, now: float, first_attempted: bool) -> None:
        sec = lease.second
        if lease.deployment is not None:
            if not first_attempted:
                self._window("d", lease.deployment, "r").add(now, -1, sec)
            self._window("d", lease.deployment, "t").add(now, -lease.tokens, sec)
        if report.answered_by and report.tokens:
            self._window("d", report.answered_by, "t").add(now, report.tokens, sec)
        if lease.flight is not None:
            self._flights.get(lease.flight[0], {}).pop(lease.flight[1], None)
        if lease.key_id is not None:
            kid = lease.key_id
            if lease.slot is not None:
                self._slots.get(kid, {}).pop(lease.slot, None)
            self._window("k", kid, "t").add(now, report.tokens - lease.tokens, sec)
            reserve = self._reserve(kid)
            reserve.add(now, -lease.cost_micros, reserve.bucket(sec))
            if report.cost_micros:
                spent = self._spend.get((kid, lease.period), 0)
                self._spend[(kid, lease.period)] = spent + report.cost_micros
        if lease.probes:
            recorded = {o.target_id for o in report.outcomes}
            for tid in lease.probes:
                if tid not in recorded and tid in self._circuits:
                    self._circuits[tid].release_probe()

    # --- pieces of before() ------------------------------------------------------------------

    def _open(self, now: float) -> dict[str, float]:
        opened: dict[str, float] = {}
        circuits = self._circuits
        for tid in self._tripped:
            blocked = circuits[tid].blocked_for(now)
            if blocked is not None:
                opened[tid] = blocked
        return opened

    def _saturation(self, ask: DeploymentAsk, tokens: int, now: float) -> Saturation | None:
        if ask.rpm is not None:
            w = self._window("d", ask.target_id, "r")
            if w.total(now) + 1 > ask.rpm:
                return Saturation(w.room_in(now, ask.rpm, 1), "rpm", ask.rpm)
        if ask.tpm is not None:
            w = self._window("d", ask.target_id, "t")
            if w.total(now) + tokens > ask.tpm:
                return Saturation(w.room_in(now, ask.tpm, tokens), "tpm", ask.tpm)
        return None

    def _load(self, ask: DeploymentAsk, now: float) -> float:
        """The share of its rpm / tpm ``ask``'s deployment used in the window (the larger)."""
        use = 0.0
        if ask.rpm is not None:
            use = self._window("d", ask.target_id, "r").total(now) / ask.rpm
        if ask.tpm is not None:
            use = max(use, self._window("d", ask.target_id, "t").total(now) / ask.tpm)
        return use

    def _judge(self, key: KeyAsk, tokens: int, now: float) -> KeyVerdict:
        record = self._keys.get(key.key_id)
        if record is None or record.revoked:
            return KeyVerdict(REFUSED_REVOKED)
        wr, wt = self._window("k", key.key_id, "r"), self._window("k", key.key_id, "t")
        used_r, used_t = wr.total(now), wt.total(now)
        spend = self._spend.get((key.key_id, key.period), 0)
        reserved = self._reserve(key.key_id).total(now)
        held = self._held(key.key_id, now) if key.max_in_flight is not None else 0
        refused, retry, downgraded = None, 0.0, False
        budget = key.budget_micros
        if key.rpm is not None and used_r + 1 > key.rpm:
            refused, retry = REFUSED_RPM, wr.room_in(now, key.rpm, 1)
        elif key.tpm is not None and used_t + tokens > key.tpm:
            refused, retry = REFUSED_TPM, wt.room_in(now, key.tpm, tokens)
        elif budget is not None and spend + reserved + key.cost_micros > budget:
            cheap = key.cheap_cost_micros
            if cheap is not None and spend + reserved + cheap <= budget:
                downgraded = True
            else:
                refused = REFUSED_BUDGET
                retry = key.period_end - now if math.isfinite(key.period_end) else -1.0
        if not refused and key.max_in_flight is not None and held + 1 > key.max_in_flight:
            refused, retry = REFUSED_CONCURRENCY, 1.0
        taken = 0 if refused else 1
        cost = 0 if refused else (key.cheap_cost_micros or 0) if downgraded else key.cost_micros
        return KeyVerdict(
            refused,
            retry,
            downgraded,
            key.rpm,
            max(0, (key.rpm or 0) - used_r - taken),
            wr.reset_in(now) if refused else (wr.bucket(now) + wr.n) * wr.size - now,
            key.tpm,
            max(0, (key.tpm or 0) - used_t - tokens * taken),
            wt.reset_in(now) if refused else (wt.bucket(now) + wt.n) * wt.size - now,
            key.budget_micros,
            spend,
            reserved + cost,
            key.max_in_flight,
            held + taken if key.max_in_flight is not None else 0,
        )

    def _flying(self, ticket: Ticket, now: float) -> dict[str, int]:
        """Requests in flight on each deployment ``ticket.flight`` lists."""
        if ticket.flight is None:
            return {}
        return {tid: _live(self._flights.get(tid), now) for tid in ticket.flight.ids}

    def _held(self, kid: str, now: float) -> int:
        """Slots of ``kid`` still held at ``now`` (expired ones are dropped)."""
        return _live(self._slots.get(kid), now)

    def _take(
        self, ticket: Ticket, verdict: KeyVerdict | None, available: list[DeploymentAsk], now: float
    ) -> Lease:
        probes: list[str] = []
        tripped = self._tripped
        if tripped:
            circuits = self._circuits
            for ask in available:
                if ask.target_id in tripped:
                    c = circuits[ask.target_id]
                    c.probe_until = now + self._cfg.probe_lease_s
                    probes.append(ask.target_id)
        deployment = None
        first = available[0]
        downgraded = verdict is not None and verdict.downgraded
        if not downgraded and (first.rpm is not None or first.tpm is not None):
            deployment = first.target_id
            self._window("d", deployment, "r").add(now, 1)
            self._window("d", deployment, "t").add(now, ticket.tokens)
        flight = None
        fa = ticket.flight
        if fa is not None and not downgraded and first.target_id in fa.ids:
            flight = (first.target_id, fa.slot)
            self._flights.setdefault(first.target_id, {})[fa.slot] = now + fa.hold_s
        key, cost, slot = ticket.key, 0, None
        if key is not None:
            if key.max_in_flight is not None:
                slot = key.slot
                self._slots.setdefault(key.key_id, {})[slot] = now + key.hold_s
            self._window("k", key.key_id, "r").add(now, 1)
            self._window("k", key.key_id, "t").add(now, ticket.tokens)
            cost = (key.cheap_cost_micros or 0) if downgraded else key.cost_micros
            self._reserve(key.key_id).add(now, cost)
        return new_lease(
            key.key_id if key else None,
            math.floor(now),
            ticket.tokens,
            cost,
            key.period if key else "total",
            key.period_end if key else math.inf,
            deployment,
            tuple(probes) if probes else (),
            True,  # shared
            slot,
            flight,
        )

    # --- storage -----------------------------------------------------------------------------

    def _circuit(self, tid: str) -> Circuit:
        c = self._circuits.get(tid)
        if c is None:
            c = self._circuits[tid] = Circuit(self._bucket_s)
        return c

    def _window(self, scope: str, name: str, metric: str) -> Window:
        wid = f"{scope}:{name}:{metric}"
        w = self._windows.get(wid)
        if w is None:
            w = self._windows[wid] = Window(*RATE_WINDOW)
        return w

    def _reserve(self, kid: str) -> Window:
        wid = f"k:{kid}:reserve"
        w = self._windows.get(wid)
        if w is None:
            w = self._windows[wid] = Window(*RESERVE_WINDOW)
        return w

    def forget_usage(self) -> None:
        """Drop key counters and spend (the Redis backend calls this once it has resynced)."""
        self._windows = {k: w for k, w in self._windows.items() if not k.startswith("k:")}
        self._spend.clear()

    async def open_until(
        self, target_ids: tuple[str, ...], until: float, reason: str, now: float
    ) -> None:
        if until <= now:
            return
        for tid in target_ids:
            c = self._circuit(tid)
            c.hold_open(until, reason)
            if c.trips:
                self._tripped[tid] = None

    async def health(self, now: float) -> list[Health]:
        return [c.health(tid, now) for tid, c in sorted(self._circuits.items())]

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None

    async def put_key(self, record: KeyRecord) -> None:
        self._keys[record.id] = record
        self._keys_version += 1

    def mirror_keys(self, records: Iterable[KeyRecord]) -> None:
        """Keep copies of shared key records (for the Redis backend's local fallback)."""
        for r in records:
            self._keys[r.id] = r

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    async def list_keys(self) -> list[KeyRecord]:
        return sorted(self._keys.values(), key=lambda r: (r.created_at, r.id))

    async def key_spend(self, key_id: str, period: str) -> int:
        return self._spend.get((key_id, period), 0)

    async def get_pin(self, session: str, now: float) -> Pin | None:
        return self.pin(session, now)

    def pin(self, session: str, now: float) -> Pin | None:
        """:meth:`get_pin`, callable from synchronous code (the Redis backend's fallback)."""
        pin = self._pins.get(session)
        return pin if pin is not None and pin.until > now else None

    async def set_pin(self, session: str, target_id: str, ttl_s: float, now: float) -> None:
        self.keep_pin(session, Pin(target_id, now + ttl_s), now)

    def keep_pin(self, session: str, pin: Pin, now: float) -> None:
        """Store ``pin``; past :data:`MAX_PINS`, lapsed pins go first, then the oldest."""
        pins = self._pins
        pins.pop(session, None)
        if len(pins) >= MAX_PINS:
            for s in [s for s, p in pins.items() if p.until <= now]:
                del pins[s]
            while len(pins) >= MAX_PINS:
                del pins[next(iter(pins))]
        pins[session] = pin


def _live(slots: dict[str, float] | None, now: float) -> int:
    """Slots still held at ``now`` (expired ones are dropped)."""
    if not slots:
        return 0
    expired = [s for s, until in slots.items() if until <= now]
    for s in expired:
        del slots[s]
    return len(slots)
