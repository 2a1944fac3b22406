"""Admission and settlement: key permissions, rate limits and budgets around the planner.

Per request, two calls to the state backend (one Redis round trip each)::

    admit   key may use what the request needs? (403 otherwise) -> plan (pure, from the last
            View this replica saw) -> StateStore.before(Ticket) -> 429/401 on a refused key,
            cheaper variant on a budget downgrade, re-plan only if the View changed what the
            plan assumed -> 503/429 when every capable deployment is open or at its limit
    settle  StateStore.after(Report): breaker outcomes, attempts, tokens and spend from usage

What a request reserves before it is forwarded: one request and ``prompt + output reserve``
tokens on the key and on the first available deployment, and on the key's budget the most any
candidate the router may try (the first ``max_attempts``) could cost (``prompt x input price +
output reserve x output price``), so admitted requests can never spend past the budget unless a
host bills more than ``max_tokens``. After the answer the tokens and spend are settled from
``usage`` (an answer without ``usage`` is charged its reservation). Spend is integer micro-USD.
A budget downgrade sends the request to the single cheapest capable deployment, no fallback.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.catalogue.catalogue import Config
from gateway.catalogue.needs import Needs
from gateway.catalogue.target import Bill, Target
from gateway.errors import AuthenticationFailed, GatewayError, PermissionDenied, RateLimited
from gateway.observability.metrics import Metrics
from gateway.observability.timing import StageTimes
from gateway.routing.affinity import pinnable, put_first
from gateway.routing.planner import Plan, plan
from gateway.routing.spread import Spread
from gateway.state.base import (
    REFUSED_CONCURRENCY,
    REFUSED_REVOKED,
    DeploymentAsk,
    KeyAsk,
    KeyVerdict,
    Lease,
    Outcome,
    Pin,
    Report,
    StateStore,
    Ticket,
    View,
    new_report,
    new_ticket,
)
from gateway.state.memory import MemoryState
from gateway.tenancy.auth import Caller, KeyBook
from gateway.tenancy.keys import KeyRecord, period_window
from gateway.tenancy.refusals import ratelimit_headers, refusal, unavailable


@dataclass(slots=True)
class Admitted:
    plan: Plan
    lease: Lease | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    """``x-ratelimit-*`` (keys with limits) and ``x-glm-budget-downgrade``."""
    pin: Pin | None = None
    """The session's pinned deployment, when a session was asked about."""
    pin_known: bool = True
    """False: shared state did not answer in time (this replica's local view): no pin seen
    does not mean the session has none."""
    pin_first: bool = False
    """The pinned deployment is first in the plan (the lease was taken on it)."""
    pin_choice: bool = False
    """The plan had two or more deployments a pin could choose among."""


@dataclass(slots=True)
class _Cheap:
    needs: Needs
    cost_micros: int
    variant: str


class _NothingLeft(Exception):
    """No capable deployment left once the View was seen (:meth:`Admission._decide`)."""

    def __init__(self, needs: Needs) -> None:
        super().__init__()
        self.needs = needs
        """What was planned (the cheaper variant's needs after a budget downgrade)."""


class _Head(NamedTuple):
    asks: tuple[DeploymentAsk, ...]
    movable: tuple[str, ...]
    targets: tuple[Target, ...]
    """What the entry is keyed by (held, so their ids are not reused while it is kept)."""


_new = object.__new__
HEADS_KEPT = 4096
"""Plan heads remembered per Admission (a few per routing signature and blocked set)."""
_NOTHING_BLOCKED: frozenset[str] = frozenset()
SLOT_SLACK_S = 30.0
"""A key's in-flight slot is held for the request's deadline plus this (the answer's relay and
the ``after`` call), unless released first: a crashed replica's slots come back then."""
_SLOT_PREFIX = os.urandom(6).hex() + "-"
_slots = itertools.count(1)
"""In-flight slot ids: random per process, then a counter (unique across replicas)."""


class Snapshot:
    """The last View this replica saw: what the planner assumes before asking again."""

    def __init__(self) -> None:
        self._open: dict[str, float] = {}
        self._full: dict[str, tuple[float, str]] = {}
        self.latency: dict[str, float] = {}
        self.clear = True
        """Nothing open or full was seen (the usual case): nothing to look through."""

    def blocked(self, now: float) -> tuple[dict[str, float], dict[str, str]]:
        if self.clear:
            return {}, {}
        opened = {t: u - now for t, u in self._open.items() if u > now}
        return opened, {t: why for t, (u, why) in self._full.items() if u > now}

    def blocked_ids(self, now: float) -> frozenset[str]:
        if self.clear:
            return _NOTHING_BLOCKED
        opened, full = self.blocked(now)
        return frozenset(opened) | frozenset(full)

    def limited(self, now: float) -> dict[str, tuple[float, str]]:
        return {t: (u - now, why) for t, (u, why) in self._full.items() if u > now}

    def update(self, view: View, asked: Sequence[DeploymentAsk], now: float) -> None:
        opened = view.open_circuits
        if opened:
            self._open = {t: now + s for t, s in opened.items()}
        elif self._open:
            self._open = {}
        if self._full:
            for ask in asked:
                self._full.pop(ask.target_id, None)
        if view.saturated:
            for tid, sat in view.saturated.items():
                if sat.kind == "rpm" and sat.seconds > 0:  # TPM room depends on the request
                    self._full[tid] = (now + sat.seconds, sat.reason)
        if view.latency_s:
            self.latency.update(view.latency_s)
        self.clear = not self._open and not self._full


class Admission:
    def __init__(
        self,
        config: Config,
        state: StateStore,
        *,
        keys: KeyBook | None = None,
        metrics: Metrics | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._catalogue = config.catalogue
        self._routing = config.gateway.routing
        self._state = state
        # The in-process backend's before, without its coroutine (the same call: it awaits
        # nothing); None for any other backend, or one that changes before.
        self._look = state.look if type(state) is MemoryState else None
        self._keys = keys
        self._metrics = metrics
        self._wall = wall
        self._snap = Snapshot()
        self._asks = {t.id: DeploymentAsk(t.id, t.rpm, t.tpm) for t in config.catalogue.targets}
        """What admission asks the state about each deployment (immutable: built once)."""
        self._heads: dict[tuple[int, ...], _Head] = {}
        """The first candidates of a plan (by identity) -> what the ticket says about them."""
        self._picked: dict[int, tuple[tuple[Target, ...], _Head]] = {}
        """id(Plan.picked) -> (it, its head): the same entries, by the planner's shared order."""
        spread = self._routing.spread
        self._spread = (
            Spread(spread, self._routing, config.catalogue.index) if spread.enabled else None
        )

    def blocked_ids(self, now: float) -> frozenset[str]:
        """Deployments this replica last saw with an open circuit or at their rpm limit."""
        return self._snap.blocked_ids(now)

    def _plan(
        self,
        needs: Needs,
        now: float,
        *,
        stateless: bool = False,
        explain: bool = False,
        advance: bool = False,
    ) -> Plan:
        """``explain``: word every refusal (``/v1/route``); an empty plan is always explained.
        ``advance``: this plan is the one to forward (the spread's round-robin moves)."""
        snap = self._snap
        opened, full = (None, None) if stateless or snap.clear else snap.blocked(now)
        return plan(
            needs,
            self._catalogue,
            self._routing,
            open_circuits=opened,
            latency=snap.latency,
            saturated=full,
            explain=explain,
            spread=self._spread,
            advance=advance,
        )

    async def admit(
        self,
        needs: Needs,
        caller: Caller | None,
        *,
        reserve: bool = True,
        times: StageTimes | None = None,
        session: str = "",
    ) -> Admitted:
        """Plan the request and take its lease; raises 401/403/429/503 as described above.
        ``session``: a hashed session key whose pin the same state call reads."""
        now = self._wall()
        record = caller.record if caller is not None else None
        if record is not None:
            restrict(needs, record)
        snap = self._snap
        assumed = _NOTHING_BLOCKED if snap.clear else snap.blocked_ids(now)
        first = (
            plan(  # self._plan's usual case, without its call
                needs,
                self._catalogue,
                self._routing,
                latency=snap.latency,
                explain=not reserve,
                spread=self._spread,
                advance=reserve,
            )
            if snap.clear
            else self._plan(needs, now, explain=not reserve, advance=reserve)
        )
        asked = first if first.targets else self._plan(needs, now, stateless=True)
        if not asked.targets:
            return Admitted(first)
        cheap = self._cheap(needs, asked, now) if record and record.downgrade and reserve else None
        known = self._picked.get(id(asked.picked)) if asked.picked is not None else None
        head = self._head(asked) if known is None else known[1]  # _head's hit, without its call
        # With a session, the same call reads its pin (and may put it first).
        movable = head.movable if session else ()
        if (record is None or not reserve) and (self._spread is None or not asked.spread):
            # _ticket's usual case, without its call: no key to ask about, no flight to take.
            ticket = new_ticket(
                head.asks, needs.prompt.best + needs.output_tokens, None, reserve, None, session,
                movable,
            )  # fmt: skip
        else:
            ticket = self._ticket(
                needs, asked, record if reserve else None, cheap, reserve, now, session, movable,
                head,
            )  # fmt: skip
        started = time.perf_counter()
        look = self._look
        view = look(ticket, now) if look is not None else await self._state.before(ticket, now)
        if (
            record is not None
            and self._keys is not None
            and _lost(view, record)
            and await self._keys.recover(record)  # the state backend had lost the key
        ):
            view = await self._state.before(ticket, now)
        if times is not None:
            times.before_s = time.perf_counter() - started
        if snap.clear and not view.open_circuits and not view.saturated:
            if view.latency_s:  # all that snap.update would do
                snap.latency.update(view.latency_s)
        else:
            snap.update(view, ticket.candidates, now)
        if self._spread is not None:
            self._spread.saw(view.in_flight, view.load)
        if self._keys is not None:
            self._keys.saw_version(view.keys_version)
        try:
            return self._decide(needs, view, ticket, cheap, first, assumed, now)
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
        """The plan to forward, as the View left it; raises 401/429 for a refused key, and
        :class:`_NothingLeft` when nothing is left to forward to (the lease is to release).
        Synchronous: no coroutine of its own per request."""
        v = view.verdict
        if v is not None and v.refused is not None:
            raise self._refused(v, ticket)
        headers = ratelimit_headers(v) if v is not None else []
        final = first
        if v is not None and v.downgraded and cheap is not None:
            headers.append(("x-glm-budget-downgrade", f"{_first_variant(first)}->{cheap.variant}"))
            needs = cheap.needs
            if self._metrics is not None and ticket.key is not None:
                self._metrics.budget_downgrades.labels(
                    self._metrics.key_label(ticket.key.key_id)
                ).inc()
            final = self._plan(needs, now, explain=not ticket.reserve, advance=ticket.reserve)
        elif (
            (_NOTHING_BLOCKED if self._snap.clear else self._snap.blocked_ids(now)) != assumed
            or not first.targets
            or (first.spread and not ticket.reserve)  # /v1/route: the counts just read
        ):
            final = self._plan(needs, now, explain=not ticket.reserve, advance=ticket.reserve)
        if not final.targets and ticket.reserve:
            raise _NothingLeft(needs)
        picked = final.targets[0].id if final.targets else None
        pin_first = put_first(final.targets, view.pin, ticket.pinnable, view)
        if final.spread and ticket.reserve and picked is not None:
            head, group = final.targets[0].id, final.spread[0]
            if head != picked and picked in group.ids and self._spread is not None:
                self._spread.unpick(group, picked)  # the pin's choice, not the round-robin's
            if head in group.ids and self._metrics is not None:
                self._metrics.spread_picks.labels(head).inc()
        # Written slot by slot: ``Admitted(...)`` (a type call, then __init__) costs more.
        got = _new(Admitted)
        got.plan, got.lease, got.headers, got.pin = final, view.lease, headers, view.pin
        got.pin_known, got.pin_first, got.pin_choice = (
            not view.degraded,
            pin_first,
            len(ticket.pinnable) > 1,
        )
        return got

    def _ticket(
        self,
        needs: Needs,
        p: Plan,
        record: KeyRecord | None,
        cheap: _Cheap | None,
        reserve: bool,
        now: float,
        session: str = "",
        movable: tuple[str, ...] = (),
        head: _Head | None = None,
    ) -> Ticket:
        tokens = needs.prompt.best + needs.output_tokens
        # The router tries at most max_attempts candidates: only those are asked about.
        asks = (head or self._head(p)).asks
        key = None
        if record is not None:
            tried = p.targets[: self._routing.max_attempts]
            period, end = period_window(record.budget_period, now)
            cost = max(estimate_micros(t, needs) for t in tried)
            mif = record.max_in_flight
            key = KeyAsk(
                record.id,
                record.rpm,
                record.tpm,
                record.budget_micros,
                period,
                end,
                cost,
                cheap.cost_micros if cheap is not None else None,
                mif,
                f"{_SLOT_PREFIX}{next(_slots):x}" if mif is not None else "",
                self._hold_s(needs) if mif is not None else 0.0,
            )
        flight = None
        if p.spread and self._spread is not None:
            flight = self._spread.ask(
                p.spread, f"{_SLOT_PREFIX}{next(_slots):x}", self._hold_s(needs)
            )
        return new_ticket(asks, tokens, key, reserve, flight, session, movable)

    def _head(self, p: Plan) -> _Head:
        """The asks about the candidates the router may try (the first ``max_attempts``) and
        the ones a session's pin may put first (:func:`pinnable`): both depend only on which
        deployments come first, so they are made once per such head. The entry keeps the
        targets it is keyed by (their ids stay theirs while it lives). A plan copied from the
        planner's shared order (``Plan.picked``) is looked up by that order's identity: one
        lookup instead of a key made of the first ids (the same entry, held by both keys)."""
        picked = p.picked
        if picked is not None:
            got = self._picked.get(id(picked))
            if got is not None:
                return got[1]
        targets = p.targets
        reach = self._routing.max_attempts
        first = targets[: max(reach, 2)]  # the second one tells pinnable whether there is one
        key = tuple(map(id, first))
        got_head = self._heads.get(key)
        if got_head is None:
            if len(self._heads) >= HEADS_KEPT:
                self._heads.clear()
            asks = tuple([self._asks[t.id] for t in first[:reach]])
            got_head = self._heads[key] = _Head(asks, pinnable(targets, reach), tuple(first))
        if picked is not None:
            if len(self._picked) >= HEADS_KEPT:
                self._picked.clear()
            self._picked[id(picked)] = (picked, got_head)  # holds picked: its id stays its own
        return got_head

    def _hold_s(self, needs: Needs) -> float:
        """How long an in-flight slot is held at most: the request's deadline plus slack."""
        total = self._routing.total_timeout_s
        if needs.timeout is not None:
            total = min(total, needs.timeout)
        return total + SLOT_SLACK_S

    def _cheap(self, needs: Needs, p: Plan, now: float) -> _Cheap | None:
        """The cheapest deployment that meets every need, when its variant is not the first.

        A downgraded request goes there alone (no fallback), so its reservation is exact.
        """
        cheap = dataclasses.replace(needs, policy="cost", fallback="none", pinned=None)
        cp = self._plan(cheap, now)
        if not cp.targets:
            return None
        variant = cp.targets[0].variant.id
        if variant == _first_variant(p):
            return None
        cheap.allowed_variants = frozenset({variant})
        cost = max(estimate_micros(t, cheap) for t in cp.targets)
        return _Cheap(cheap, cost, variant)

    def _refused(self, v: KeyVerdict, ticket: Ticket) -> GatewayError:
        reason = v.refused or "unknown"
        if self._metrics is not None:
            self._metrics.rate_limited.labels("key", reason).inc()
        if reason == REFUSED_REVOKED:
            return AuthenticationFailed("This API key was revoked.")
        if reason == REFUSED_CONCURRENCY:
            return _too_many_in_flight(v)
        return refusal(v, ticket.tokens)

    def _unavailable(self, needs: Needs, view: View, now: float) -> GatewayError:
        bare = self._plan(needs, now, stateless=True)
        blocked = [t.id for t in bare.targets]
        limited = self._snap.limited(now)
        limited.update((t, (s.seconds, s.reason)) for t, s in view.saturated.items())
        err = unavailable(blocked, view.open_circuits, limited)
        if self._metrics is not None and isinstance(err, RateLimited):
            self._metrics.rate_limited.labels("deployments", "rpm").inc()
        return err

    async def _release(self, lease: Lease | None, now: float) -> None:
        if lease is not None:
            await self._state.after(Report(lease=lease), now)

    def settle(
        self,
        lease: Lease | None,
        outcomes: Sequence[Outcome],
        attempted: Sequence[Target],
        target: Target | None,
        billed: Bill | None,
    ) -> Awaitable[None]:
        """Record what happened and settle the lease from the answer's usage, ``billed`` on
        ``target`` (:func:`~gateway.catalogue.target.bill`; one backend call): the call to
        await (not a coroutine of its own: one frame fewer per request).

        Attempts and the answering deployment are counted only where a deployment has limits
        of its own (``Target.has_own_limits``): the others keep no windows.
        """
        if len(attempted) == 1:  # the usual case: no list comprehension (a function of its own)
            only = attempted[0]
            attempts: tuple[str, ...] = (only.id,) if only.has_own_limits else ()
        else:
            attempts = tuple([t.id for t in attempted if t.has_own_limits])
        if lease is None and not outcomes and not attempts:
            return _nothing()
        tokens, cost, answered_by = 0, 0, None
        if target is not None:
            tokens, cost = _charge(billed, lease)
            if target.has_own_limits:
                answered_by = target.id
        report = new_report(tuple(outcomes), attempts, lease, answered_by, tokens, cost)
        return self._state.after(report, self._wall())


async def _nothing() -> None:
    return None


def _lost(view: View, record: KeyRecord) -> bool:
    """The backend calls a key revoked that this replica's copy holds as live: revoked
    elsewhere, or lost by the backend (:meth:`KeyBook.recover` tells which)."""
    v = view.verdict
    return v is not None and v.refused == REFUSED_REVOKED and not record.revoked


def _too_many_in_flight(v: KeyVerdict) -> RateLimited:
    """429 for a key at its ``max_in_flight`` (counted across every replica)."""
    return RateLimited(
        f"Too many requests in flight for this API key: its limit is {v.in_flight_limit} "
        "running at once (across all replicas). Retry in 1s, once one of them has finished.",
        headers={"Retry-After": "1", **dict(ratelimit_headers(v))},
    )


def restrict(needs: Needs, record: KeyRecord) -> None:
    """Narrow ``needs`` to what a virtual key may use; PermissionDenied (403) otherwise."""
    if record.surfaces is not None:
        needs.surfaces = record.surfaces
    caps = record.allowed_capabilities
    if caps is not None:
        denied = [c for c in needs.capabilities if c not in caps]
        if denied:
            raise PermissionDenied(
                f"This API key may not use {', '.join(denied)}; it may use: "
                f"{', '.join(caps) or 'no special capability'}.",
                code="capability_not_allowed",
            )
    allowed = record.allowed_variants
    if allowed is None:
        return
    if needs.pinned is not None and needs.pinned not in allowed:
        raise PermissionDenied(
            f"This API key may not use model {needs.pinned!r}; it may use: "
            f"{', '.join(allowed)} (or 'auto').",
            param="model",
            code="model_not_allowed",
        )
    mine = frozenset(allowed)
    current = needs.allowed_variants
    needs.allowed_variants = mine if current is None else current & mine
    if not needs.allowed_variants:
        raise PermissionDenied(
            f"This API key may use only {', '.join(allowed)}, none of which this route allows.",
            param="model",
            code="model_not_allowed",
        )


def estimate_micros(target: Target, needs: Needs) -> int:
    """The most a request could cost on ``target``, in micro-USD (prices are per 1M tokens)."""
    price = target.price
    if price is None:
        return 0
    return math.ceil(needs.prompt.best * price.input + needs.output_tokens * price.output)


def _charge(billed: Bill | None, lease: Lease | None) -> tuple[int, int]:
    if billed is not None and billed[4]:
        # a prompt the host read from its cache is billed (and charged here) at the cached rate
        return billed[0] + billed[1], math.ceil(billed[3])
    if lease is None:
        return 0, 0
    return lease.tokens, lease.cost_micros


def _first_variant(p: Plan) -> str:
    return p.targets[0].variant.id if p.targets else "none"
