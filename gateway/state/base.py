"""The StateStore seam: state that replicas must share.

Circuit breakers and cooldowns, rate-limit windows, budget spend, virtual key records and
health. Two backends pass one contract suite (``tests/contract/test_state_contract.py``):
:mod:`gateway.state.memory` (one process) and :mod:`gateway.state.redis` (many replicas).

A request costs the backend two calls, each one round trip on Redis (one Lua script):
:meth:`StateStore.before` with a :class:`Ticket` (the planned candidates, the token estimate,
the key's limits and cost estimate) answers a :class:`View` (open circuits, saturated
deployments, the key's verdict) and takes a :class:`Lease` (reserved counters, held probes);
:meth:`StateStore.after` with a :class:`Report` records the attempts and settles the lease
from the answer's ``usage``.

Windows (both backends, same arithmetic): a count made at second ``t`` is held in bucket
``t // size`` and counted while that bucket is one of the last ``n``. Rate limits use 60
one-second buckets (a sliding minute); the breaker's error rate uses 12 buckets over
``error_window_s``; cost reservations use 15 one-minute buckets, so a lease whose request
never settles (a crashed replica) frees itself within a quarter of an hour.

A key with ``max_in_flight`` holds one *slot* per request running (``KeyAsk.slot``, an id
unique to the request): a set of slot ids scored by when each expires. ``before`` drops expired
slots, counts the rest against the limit and adds this request's; ``after`` removes it. A slot
expires ``KeyAsk.hold_s`` after it was taken (the request's deadline plus slack, so never
before its request could have ended), which is how a slot held by a crashed replica comes back.

Deployments in a spread group (``routing.spread``) count their requests in flight the same way
(``Ticket.flight``): ``before`` reports each listed deployment's live slots and, when it
reserves, adds this request's slot on the first available candidate if it is listed; ``after``
removes it. Nothing is counted for a ticket without ``flight``. ``before`` also reports how
much of its ``rpm`` / ``tpm`` each listed deployment has used (``View.load``: read from the
windows it checks anyway).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import GatewayError
from gateway.state.frozen import quick_init, quick_new
from gateway.tenancy.keys import KeyRecord

RATE_WINDOW = (1, 60)
"""(bucket seconds, buckets) of per-minute limits."""
RESERVE_WINDOW = (60, 15)
"""(bucket seconds, buckets) of budget reservations."""
ERROR_BUCKETS = 12
LATENCY_ALPHA = 0.2

REFUSED_REVOKED = "revoked"
REFUSED_RPM = "rpm"
REFUSED_TPM = "tpm"
REFUSED_BUDGET = "budget"
REFUSED_CONCURRENCY = "concurrency"


class StateUnavailable(GatewayError):
    """The shared backend cannot do an admin operation now (the hot path never raises it)."""

    status = 503
    type = "server_error"
    code = "state_unavailable"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one upstream attempt did, as far as the breaker cares."""

    target_id: str
    ok: bool
    latency_s: float
    failure_class: str | None = None
    cooldown_s: float | None = None
    """Open the circuit for at least this long (Retry-After, a quota reset, a bad key)."""
    key_bad: bool = False
    """The host refused this deployment's API key or account (auth, no balance): the decision
    table's ``mark_key_bad``. Health/readiness show such a deployment as ``key_bad``."""


@dataclass(frozen=True, slots=True)
class DeploymentAsk:
    """A planned candidate, in plan order, with the deployment's own limits."""

    target_id: str
    rpm: int | None = None
    tpm: int | None = None

    @property
    def has_own_limits(self) -> bool:
        """Only a deployment with an rpm or tpm of its own keeps request/token windows."""
        return self.rpm is not None or self.tpm is not None


@dataclass(frozen=True, slots=True)
class KeyAsk:
    """A virtual key's limits and what this request would cost it."""

    key_id: str
    rpm: int | None = None
    tpm: int | None = None
    budget_micros: int | None = None
    period: str = "total"
    """Budget period id (:func:`gateway.tenancy.keys.period_window`)."""
    period_end: float = float("inf")
    cost_micros: int = 0
    """Reservation: the most the planned candidates could cost."""
    cheap_cost_micros: int | None = None
    """Reservation if downgraded to the cheapest capable variant; None: no downgrade."""
    max_in_flight: int | None = None
    """Requests of this key running at once, across replicas; None: no limit."""
    slot: str = ""
    """This request's slot id (unique per request) when ``max_in_flight`` is set."""
    hold_s: float = 0.0
    """How long the slot is held unless released first (a crashed holder's comes back)."""


@dataclass(frozen=True, slots=True)
class FlightAsk:
    """Requests in flight per deployment: the deployments to report on, and this request's
    slot (taken on the first available candidate when it is one of them)."""

    ids: tuple[str, ...]
    slot: str
    """Unique per request."""
    hold_s: float
    """How long the slot is held unless released first (a crashed holder's comes back)."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a request asks of shared state before it is forwarded."""

    candidates: tuple[DeploymentAsk, ...] = ()
    tokens: int = 0
    """Estimated tokens (prompt + output reserve), reserved on the key and first candidate."""
    key: KeyAsk | None = None
    reserve: bool = True
    """False: only look (``/v1/route``): no probe taken, nothing counted."""
    flight: FlightAsk | None = None
    """Spread groups in the plan: count requests in flight on their deployments."""
    session: str = ""
    """A hashed session key (session affinity): its live pin is answered in ``View.pin``."""
    pinnable: tuple[str, ...] = ()
    """Candidates the session's pin may put first: when the pinned deployment is one of them
    and available, it is the first available candidate (the reservation and the in-flight
    slot are taken on it, where the request goes)."""


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    refused: str | None
    """None (allowed), or ``revoked``, ``rpm``, ``tpm``, ``budget``, ``concurrency``."""
    retry_after_s: float = 0.0
    downgraded: bool = False
    rpm_limit: int | None = None
    rpm_remaining: int = 0
    rpm_reset_s: float = 0.0
    tpm_limit: int | None = None
    tpm_remaining: int = 0
    tpm_reset_s: float = 0.0
    budget_micros: int | None = None
    spend_micros: int = 0
    reserved_micros: int = 0
    """Held by requests in flight (this one included when allowed)."""
    in_flight_limit: int | None = None
    in_flight: int = 0
    """The key's requests running now, across replicas (this one included when allowed)."""


@dataclass(frozen=True, slots=True)
class Saturation:
    """A candidate deployment at its own configured limit."""

    seconds: float
    """Until it has room for this request; -1: this request alone is larger than the limit."""
    kind: str
    """``rpm`` or ``tpm``."""
    limit: int

    @property
    def reason(self) -> str:
        unit = "requests" if self.kind == "rpm" else "tokens"
        return f"at its {self.kind} limit ({self.limit} {unit}/min)"


@dataclass(frozen=True, slots=True)
class Lease:
    """What :meth:`StateStore.before` took for one request; :meth:`StateStore.after` settles it."""

    key_id: str | None = None
    second: int = 0
    """The rate-window bucket the reservation was counted in."""
    tokens: int = 0
    cost_micros: int = 0
    period: str = "total"
    period_end: float = float("inf")
    deployment: str | None = None
    """The first available candidate when it has limits of its own (rpm/tpm): one request and
    ``tokens`` reserved on it. A deployment without limits has no windows to count in."""
    probes: tuple[str, ...] = ()
    """Half-open circuits whose single probe this request holds."""
    shared: bool = True
    """Taken in the shared backend; False when it came from a replica's local fallback."""
    slot: str | None = None
    """The key's in-flight slot this request holds (keys with ``max_in_flight``)."""
    flight: tuple[str, str] | None = None
    """(deployment, slot): the in-flight slot this request holds on a spread deployment."""


@dataclass(frozen=True, slots=True)
class Pin:
    """A session's pinned deployment (session affinity) and when the pin lapses."""

    target_id: str
    until: float
    """Epoch seconds; the pin is gone from then on."""


@dataclass(frozen=True, slots=True)
class View:
    """Shared state as the planner needs it, and this request's verdict."""

    open_circuits: dict[str, float] = field(default_factory=dict)
    """target id -> seconds until it may be tried again (every open circuit, not only asked)."""
    latency_s: dict[str, float] = field(default_factory=dict)
    """target id -> recent mean latency of successful attempts (asked candidates). Only merged
    into the replica's snapshot for later plans: the Redis backend answers a deployment's
    latency once per batch of tickets (in the first that asks), not in each."""
    saturated: dict[str, Saturation] = field(default_factory=dict)
    """Asked candidates at their own RPM/TPM."""
    verdict: KeyVerdict | None = None
    """None without a key, or when no candidate was available (then nothing is taken)."""
    lease: Lease | None = None
    keys_version: int = 0
    """Bumped on every key change: replicas reload their key cache when it moves."""
    degraded: bool = False
    """Answered from a replica's local state because the shared backend did not answer."""
    in_flight: dict[str, int] = field(default_factory=dict)
    """Deployment -> requests in flight across replicas (``Ticket.flight`` ids; this request
    counted where it took its slot)."""
    pin: Pin | None = None
    """The live pin of ``Ticket.session``, when one was asked about."""
    load: dict[str, float] = field(default_factory=dict)
    """``Ticket.flight`` deployments with limits of their own, available -> the share of their
    ``rpm`` / ``tpm`` used in the current window (the larger of the two), when above 0."""


@dataclass(frozen=True, slots=True)
class Report:
    """What happened to a request, for :meth:`StateStore.after`."""

    outcomes: tuple[Outcome, ...] = ()
    attempts: tuple[str, ...] = ()
    """Target id of every upstream attempt on a deployment with limits of its own, in order
    (each counts against its RPM)."""
    lease: Lease | None = None
    answered_by: str | None = None
    """The deployment that answered, when it has limits of its own (its TPM window)."""
    tokens: int = 0
    """Tokens actually used (from ``usage``), counted on the key and ``answered_by``."""
    cost_micros: int = 0
    """Spend charged to the lease's key."""
    id: str = ""
    """Set by a backend that may deliver a report twice (a retry after a lost answer): the
    second delivery of the same id is ignored."""


@dataclass(frozen=True, slots=True)
class Health:
    target_id: str
    state: str
    """"closed", "open" or "half_open"."""
    consecutive_failures: int
    trips: int
    open_for_s: float
    latency_s: float | None
    requests: int
    failures: int
    last_failure: str | None
    window_requests: int = 0
    window_failures: int = 0

    @property
    def error_rate(self) -> float | None:
        """Failure share over the breaker's error window; None without attempts in it."""
        return self.window_failures / self.window_requests if self.window_requests else None


MAX_PINS = 100_000
"""Pins one process keeps in memory (the memory backend, the Redis backend's local copy)."""


class StateStore(Protocol):
    @property
    def degraded(self) -> bool:
        """True while serving from local state because the shared backend does not answer."""
        ...

    async def before(self, ticket: Ticket, now: float) -> View:
        """One call before forwarding. Atomically: report open circuits and saturated
        candidates; judge the key (revoked, RPM, TPM, budget incl. in-flight reservations,
        requests in flight); when allowed and ``ticket.reserve``, count one request and
        ``ticket.tokens`` on the key and on the first available candidate, reserve the cost,
        take the key's in-flight slot, and take the single probe of
        every half-open candidate (others keep seeing it open until the probe's outcome is
        recorded or ``probe_lease_s`` passes). Nothing is taken when no candidate is available
        or the key is refused. With ``ticket.session``, the session's live pin is answered too
        (``View.pin``, session affinity): no call of its own on the hot path; an available
        pinned deployment listed in ``ticket.pinnable`` counts as the first available one.
        """
        ...

    async def after(self, report: Report, now: float) -> None:
        """One call after answering: breaker outcomes, attempts against deployment RPM,
        token and spend settlement (actual minus reserved), unused probes and the in-flight
        slot and the deployment in-flight slot released."""
        ...

    async def open_until(
        self, target_ids: tuple[str, ...], until: float, reason: str, now: float
    ) -> None:
        """Hold these circuits open until epoch ``until`` (a plan window a host says is spent,
        until its stated reset), then half-open as after any trip; one whose circuit is open
        longer keeps it. No attempt is counted. Off the request path; never raises (a shared
        backend that does not answer: only this replica's local state is told)."""
        ...

    async def health(self, now: float) -> list[Health]: ...

    async def ping(self) -> bool:
        """True when the backend is reachable (readiness)."""
        ...

    async def aclose(self) -> None: ...

    async def put_key(self, record: KeyRecord) -> None:
        """Create or replace a key record (revocation is a replace); bumps the keys version."""
        ...

    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def key_spend(self, key_id: str, period: str) -> int:
        """Settled spend in micro-USD of ``key_id`` in budget period ``period``."""
        ...

    async def get_pin(self, session: str, now: float) -> Pin | None:
        """The live pin of ``session`` (a hashed session key), or None. On the hot path: never
        raises and waits at most the backend's hot-path timeout (then: this replica's copy)."""
        ...

    async def set_pin(self, session: str, target_id: str, ttl_s: float, now: float) -> None:
        """Pin ``session`` to ``target_id`` for ``ttl_s`` from ``now`` (a re-pin replaces it)."""
        ...


# Built on every request (several per request): a quicker __init__ of the same signature.
for _cls in (
    Outcome,
    DeploymentAsk,
    KeyAsk,
    FlightAsk,
    Ticket,
    KeyVerdict,
    Lease,
    Pin,
    View,
    Report,
):
    quick_init(_cls)
del _cls
# Made once or twice per request each: quicker still than the quick __init__ (no type call).
new_ticket = quick_new(Ticket)
new_lease = quick_new(Lease)
new_view = quick_new(View)
new_report = quick_new(Report)
new_pin = quick_new(Pin)
