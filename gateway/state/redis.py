"""Redis StateStore: shared by every replica; ``redis`` itself is imported by
:mod:`gateway.state.redis_conn` (one server, Sentinel or Cluster) and the auto-pipeline.

Each hot-path call is one Lua script (:mod:`gateway.state.lua`): one round trip, atomic; calls
made in the same event-loop turn share a pipeline (:mod:`gateway.state.autopipe`), and the
turn's ``before`` and ``after`` calls are one script call (``lua.BATCH``). A
request never waits more than ``redis_timeout_ms`` for it: past that it is served from this
replica's :class:`~gateway.state.memory.MemoryState`, while the call itself runs on. If it then
lands, Redis is fine (the event loop was just busy): a late ``before`` gives back the lease it
took, a late ``after`` counted. If it fails, or too many calls are late at once, the backend
turns *degraded* (:mod:`gateway.state.outage`): calls go straight to local state, ``after``
reports are journaled, and a background task pings Redis. Once it answers, the replica replays
the journal (each report carries an id, so none counts twice), re-creates key records Redis
lost (a restart without persistence) and goes back to shared state.

While degraded, limits hold per replica: circuits from its own outcomes, RPM/TPM from its own
counts, budgets from the last shared spend it saw plus its own since.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import orjson

from gateway.catalogue.schema import BreakerConfig
from gateway.observability.metrics import Metrics
from gateway.state import lua
from gateway.state.autopipe import LATE as TIMED_OUT
from gateway.state.autopipe import AutoPipeline, Late
from gateway.state.base import (
    Health,
    Lease,
    Pin,
    Report,
    StateUnavailable,
    Ticket,
    View,
    new_report,
)
from gateway.state.circuits import error_bucket_s
from gateway.state.codec import (
    breaker_doc,
    decode_health_row,
    decode_view,
    encode_report,
    encode_ticket,
)
from gateway.state.memory import MemoryState
from gateway.state.outage import Outage
from gateway.state.redis_conn import ERRORS, Link
from gateway.state.redis_target import RedisTarget
from gateway.tenancy.keys import KeyRecord

T = TypeVar("T")
_ERRORS = ERRORS
_CAUGHT = (asyncio.CancelledError, *ERRORS)
"""What a hot-path call's await catches (:meth:`RedisState._failed` sorts them)."""
MAX_LATE = 256
"""Calls past their timeout and still running; more than this and Redis counts as down (each
holds a connection). A call that never lands fails at the socket timeout anyway."""
REPLAY_CHUNK = 200
AFTER_LINGER_S = 0.002
"""Under load an ``after`` report (sent once the answer is out) may wait this long to share
the next ``before`` batch's write: other replicas see an outcome up to this much later."""
ANSWERED, LATE, NOT_SENT = "answered", "late", "not_sent"
Landed = Callable[[Any], None]
"""Told the result of a call that came back after its timeout (None: it failed)."""


class RedisState:
    def __init__(
        self,
        target: str | RedisTarget,
        breaker: BreakerConfig,
        *,
        timeout_ms: int = 50,
        prefix: str = "glmgw",
        metrics: Metrics | None = None,
    ) -> None:
        """``target``: a ``redis://`` URL (one server) or a :class:`RedisTarget` (any mode)."""
        if isinstance(target, str):
            target = RedisTarget("single", url=target)
        self._cfg = breaker
        self._cfg_doc = breaker_doc(breaker)
        self._timeout = timeout_ms / 1000
        self._slow_timeout = max(1.0, 4 * self._timeout)
        """Calls off the hot path (admin, health, resync), and the socket timeout."""
        self._p = target.key_prefix(prefix)
        self._linger = min(AFTER_LINGER_S, self._timeout / 4)
        self._link = Link(target, f"{self._p}:keys:ver", timeout=self._slow_timeout)
        self._r = self._link.slow
        self._hot = self._link.hot
        self._auto = AutoPipeline(
            self._hot,
            {
                "before": lua.BEFORE,
                "after": lua.AFTER,
                "pin": lua.PIN_GET,
                "repin": lua.PIN_SET,
                "batch": lua.BATCH,
            },
            timeout=self._slow_timeout,
            fold=("before", "after", "batch"),
            late_s=self._timeout,
        )
        self._after = self._r.register_script(lua.AFTER)
        self._health = self._r.register_script(lua.HEALTH)
        self._open_until = self._r.register_script(lua.OPEN_UNTIL)
        self._local = MemoryState(breaker)
        self._metrics = metrics
        self._where = target.describe()
        self._outage = Outage(self._where, metrics)
        self._late = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._known: dict[str, tuple[str, int]] = {}
        """key id -> (period, shared spend + reservations) at this replica's last look."""
        self._keys_version = 0
        self._pin_late = functools.partial(self._landed, "pin", _ignore)
        self._repin_late = functools.partial(self._landed, "repin", _ignore)

    @property
    def degraded(self) -> bool:
        return self._outage.degraded

    # --- hot path ----------------------------------------------------------------------------

    async def before(self, ticket: Ticket, now: float) -> View:
        # What _script does, written out: one coroutine and one tuple less per request.
        if self._outage.degraded:
            return await self._local_before(ticket, now)
        doc, part = encode_ticket(ticket, self._cfg)
        started = time.perf_counter()
        late = _Asked(self, ticket, now).late
        call = self._auto.call("before", [self._p, repr(now), doc, part], late=late)
        try:
            raw = await call
        except _CAUGHT as exc:
            if not self._failed("before", call, started, exc):
                raise  # this request was cancelled: the call's answer is dropped
            return await self._local_before(ticket, now)
        if raw is TIMED_OUT:
            self._went_late("before", started)
            return await self._local_before(ticket, now)
        self._observe("before", started)
        view = decode_view(raw, ticket)
        self._keys_version = view.keys_version
        v = view.verdict
        if ticket.key is not None and v is not None and v.refused is None:
            self._known[ticket.key.key_id] = (ticket.key.period, v.spend_micros + v.reserved_micros)
        return view

    async def _local_before(self, ticket: Ticket, now: float) -> View:
        key = ticket.key
        if key is not None and key.budget_micros is not None:
            period, known = self._known.get(key.key_id, (key.period, 0))
            if period == key.period:
                budget = max(0, key.budget_micros - known)
                ticket = replace(ticket, key=replace(key, budget_micros=budget))
        view = await self._local.before(ticket, now)
        lease = replace(view.lease, shared=False) if view.lease is not None else None
        return replace(view, lease=lease, keys_version=self._keys_version, degraded=True)

    async def after(self, report: Report, now: float) -> None:
        """Sends the report and returns: nothing waits for its answer (the request's answer is
        out already), so settling costs no suspension of the request. The report goes in this
        turn's batch, or rides along with the next one within ``AFTER_LINGER_S`` while
        batches are in flight; this replica's later calls see it (a batch applies its reports
        before its tickets, and calls off the hot path wait for the batches in flight). One
        that fails, or lands late and then fails, is journaled for the resync."""
        if not report.id:
            report = _with_id(report, f"{_REPORT_PREFIX}{next(_reports):x}")
        lease = report.lease
        local_lease = lease is not None and not lease.shared
        if local_lease:
            self._local.apply(report, now)
            report = replace(report, lease=_charge_only(lease))
        else:
            self._local.apply(new_report(report.outcomes), now)
        if self._outage.degraded:
            self._undelivered(report, local_lease, now)
            return
        sent = _Sent(self, report, local_lease, now)
        args = [self._p, repr(now), encode_report(report), self._cfg_doc]
        self._auto.send("after", args, sent, linger=self._linger, late=sent.landed)

    async def get_pin(self, session: str, now: float) -> Pin | None:
        got, raw = await self._script("pin", session.encode(), now, self._pin_late)
        if got != ANSWERED:
            return self._local.pin(session, now)
        if raw is None:
            return None
        tid, _, until = (raw.decode() if isinstance(raw, bytes) else str(raw)).rpartition("\n")
        pin = Pin(tid, float(until))
        self._local.keep_pin(session, pin, now)  # what this replica falls back on
        return pin

    async def set_pin(self, session: str, target_id: str, ttl_s: float, now: float) -> None:
        self._local.keep_pin(session, Pin(target_id, now + ttl_s), now)
        payload = f"{session}\n{target_id}\n{ttl_s!r}".encode()
        await self._script("repin", payload, now, self._repin_late)

    def _undelivered(self, report: Report, local_lease: bool, now: float) -> None:
        """Journal for the resync; count the spend locally so budgets hold meanwhile."""
        self._outage.remember(report, now)
        if not local_lease and report.lease is not None:
            charge = Report(
                lease=_charge_only(report.lease),
                answered_by=report.answered_by,
                tokens=report.tokens,
                cost_micros=report.cost_micros,
            )
            self._local.apply(charge, now)

    async def _script(
        self, op: str, payload: bytes, now: float, late: Late, part: bytes | None = None
    ) -> tuple[str, Any]:
        """``(ANSWERED, answer)``; ``(LATE, None)``: still running, ``late`` will be told how
        it ended (through :meth:`_landed`); ``(NOT_SENT, None)``: degraded, or it failed.
        ``part``: a fourth argument (a ticket's candidates' part)."""
        if self._outage.degraded:
            return NOT_SENT, None
        started = time.perf_counter()
        # The call or the timeout, whichever first, leaving the call running: the pipeline
        # answers LATE past the timeout (one timer per batch) and tells ``late`` the rest.
        args = [self._p, repr(now), payload]
        if part is not None:
            args.append(part)
        call = self._auto.call(op, args, late=late)
        try:
            result = await call
        except _CAUGHT as exc:
            if not self._failed(op, call, started, exc):
                raise  # this request was cancelled: the call's answer is dropped
            return NOT_SENT, None
        if result is not TIMED_OUT:
            self._observe(op, started)
            return ANSWERED, result
        self._went_late(op, started)
        return LATE, None

    def _failed(
        self, op: str, call: asyncio.Future[Any], started: float, exc: BaseException
    ) -> bool:
        """A call that raised ``exc`` (a cancellation or a Redis error): True when the request
        goes on without it (Redis failed: degraded; or the pipeline was closed, at shutdown),
        False when the request itself was cancelled (the caller re-raises)."""
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if not (call.cancelled() and task is not None and not task.cancelling()):
                return False
            self._observe(op, started, ok=False)  # the pipeline was closed (shutdown)
            return True
        self._observe(op, started, ok=False)
        self._degrade(op, exc)
        return True

    def _went_late(self, op: str, started: float) -> None:
        """A call answered LATE: counted until it lands; too many at once and Redis is down."""
        self._observe(op, started, ok=False)
        self._late += 1
        if self._late > MAX_LATE:
            self._degrade(op, TimeoutError(f"{self._late} calls past {self._timeout}s"))

    def _landed(self, op: str, landed: Landed, call: asyncio.Future[Any]) -> None:
        self._late -= 1
        exc = None if call.cancelled() else call.exception()
        if call.cancelled() or exc is not None:
            if exc is not None:
                self._degrade(op, exc)
            landed(None)
            return
        landed(call.result())

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- degraded mode and resync ------------------------------------------------------------

    def _observe(self, op: str, started: float, ok: bool = True) -> None:
        if self._metrics is not None:
            self._metrics.observe_state("redis", op, time.perf_counter() - started, ok)

    def _degrade(self, op: str, exc: BaseException) -> None:
        self._outage.begin(op, exc, self._recover)

    async def _recover(self) -> int:
        """One recovery attempt; raises while Redis is not back. Returns reports replayed."""
        await self._link.relocate()  # connections to a server that went away are dead
        await self._auto.drop_connections()
        async with asyncio.timeout(self._slow_timeout):
            # a keyed read, not PING: a Cluster replica answers it with MOVED
            await self._r.exists(f"{self._p}:keys:ver")
        batch = self._outage.take()
        sent = 0
        try:
            while sent < len(batch):
                chunk = batch[sent : sent + REPLAY_CHUNK]
                async with asyncio.timeout(self._slow_timeout):
                    async with self._r.pipeline(transaction=False) as pipe:
                        for report, at in chunk:
                            args: list[str | bytes] = [self._p, repr(at)]
                            args += [encode_report(report), self._cfg_doc]
                            await self._after(args=args, client=pipe)
                        await pipe.execute()
                sent += len(chunk)
            await self._reseed_keys()
        except BaseException:
            self._outage.put_back(batch[sent:])
            raise
        self._local.forget_usage()
        return sent

    async def _reseed_keys(self) -> None:
        records = await self._local.list_keys()
        if not records:
            return
        async with asyncio.timeout(self._slow_timeout):
            async with self._r.pipeline(transaction=False) as pipe:
                for r in records:
                    name = f"{self._p}:key:{r.id}"
                    pipe.hsetnx(name, "json", r.to_json())
                    pipe.hsetnx(name, "revoked", "1" if r.revoked else "0")
                    pipe.sadd(f"{self._p}:keys", r.id)
                await pipe.execute()

    # --- off the hot path --------------------------------------------------------------------

    async def _slow(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        if self._outage.degraded:
            raise StateUnavailable(self._unavailable())
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._slow_timeout):
                await self._auto.settled()  # reports sent before this call count in its answer
                result = await call()
        except _ERRORS as exc:
            self._observe(op, started, ok=False)
            self._degrade(op, exc)
            raise StateUnavailable(self._unavailable()) from None
        self._observe(op, started)
        return result

    def _unavailable(self) -> str:
        return f"The shared state backend (redis at {self._where}) is not answering; retry soon."

    async def open_until(
        self, target_ids: tuple[str, ...], until: float, reason: str, now: float
    ) -> None:
        await self._local.open_until(target_ids, until, reason, now)  # degraded reads it
        if not target_ids or until <= now:
            return
        doc = orjson.dumps({"ids": list(target_ids), "till": until, "reason": reason})
        with contextlib.suppress(StateUnavailable):
            await self._slow("open_until", lambda: self._open_until(args=[self._p, repr(now), doc]))

    async def health(self, now: float) -> list[Health]:
        wsize = error_bucket_s(self._cfg)
        try:
            raw = await self._slow(
                "health", lambda: self._health(args=[self._p, repr(now), str(wsize)])
            )
        except StateUnavailable:
            return await self._local.health(now)
        rows = orjson.loads(raw)
        healths = (_health(row, now) for row in (rows if isinstance(rows, list) else []))
        return sorted(healths, key=lambda h: h.target_id)

    async def ping(self) -> bool:
        try:
            return bool(await self._slow("ping", self._ping))
        except StateUnavailable:
            return False

    async def _ping(self) -> bool:
        return bool(await self._r.ping())

    async def aclose(self) -> None:
        if not self._outage.degraded:  # the last requests' reports are on their way: deliver
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._slow_timeout):
                    await self._auto.settled()
        self._outage.close()
        await self._auto.aclose()
        for task in list(self._tasks):
            task.cancel()
        await self._link.aclose()

    async def put_key(self, record: KeyRecord) -> None:
        name = f"{self._p}:key:{record.id}"

        async def put() -> None:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(name, mapping={"json": record.to_json(), "revoked": int(record.revoked)})
                pipe.sadd(f"{self._p}:keys", record.id)
                pipe.incr(f"{self._p}:keys:ver")
                await pipe.execute()

        await self._slow("key_put", put)
        self._local.mirror_keys([record])

    async def get_key(self, key_id: str) -> KeyRecord | None:
        try:
            raw = await self._slow(
                "key_lookup", lambda: self._r.hget(f"{self._p}:key:{key_id}", "json")
            )
        except StateUnavailable:
            return await self._local.get_key(key_id)
        if raw is None:
            return None
        record = KeyRecord.from_json(raw)
        self._local.mirror_keys([record])
        return record

    async def list_keys(self) -> list[KeyRecord]:
        try:
            raws = await self._slow("keys_list", self._all_keys)
        except StateUnavailable:
            return await self._local.list_keys()
        records = [KeyRecord.from_json(r) for r in raws if r is not None]
        self._local.mirror_keys(records)
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def _all_keys(self) -> list[bytes | None]:
        ids = await self._r.smembers(f"{self._p}:keys")
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for kid in sorted(k.decode() if isinstance(k, bytes) else k for k in ids):
                pipe.hget(f"{self._p}:key:{kid}", "json")
            return list(await pipe.execute())

    async def key_spend(self, key_id: str, period: str) -> int:
        try:
            raw = await self._slow("spend", lambda: self._r.get(f"{self._p}:sp:{key_id}:{period}"))
        except StateUnavailable:
            return await self._local.key_spend(key_id, period)
        return int(raw or 0)


class _Asked:
    """A ``before`` on its way: when it lands after its timeout (the request went on with a
    local lease), the lease it took is given back. One object instead of a closure and a
    partial per request."""

    __slots__ = ("now", "state", "ticket")

    def __init__(self, state: RedisState, ticket: Ticket, now: float) -> None:
        self.state, self.ticket, self.now = state, ticket, now

    def late(self, call: asyncio.Future[Any]) -> None:
        self.state._landed("before", self._give_back, call)

    def _give_back(self, raw: Any) -> None:
        lease = decode_view(raw, self.ticket).lease if raw is not None else None
        if lease is not None:
            tried = (lease.deployment,) if lease.deployment else ()
            state = self.state
            state._spawn(state.after(Report(attempts=tried, lease=lease), self.now))


class _Sent:
    """An ``after`` report on its way, and where its call's answer goes (an autopipe
    :class:`~gateway.state.autopipe.Sink`: told at once, no future and no done callback per
    report); when that answer was :data:`TIMED_OUT`, told how the call really ended
    (``landed``)."""

    __slots__ = ("ended", "local_lease", "now", "report", "started", "state")

    def __init__(self, state: RedisState, report: Report, local_lease: bool, now: float) -> None:
        self.state, self.report, self.local_lease, self.now = state, report, local_lease, now
        self.started = time.perf_counter()
        self.ended: str | None = None
        """None while on its way; then "answered", "failed", "late" or "cancelled"."""

    def done(self) -> bool:
        return self.ended is not None

    def cancelled(self) -> bool:
        return self.ended == "cancelled"

    def set_result(self, result: Any) -> None:
        state = self.state
        if result is not TIMED_OUT:
            self.ended = "answered"
            state._observe("after", self.started)
            return
        self.ended = "late"
        state._went_late("after", self.started)

    def set_exception(self, exc: BaseException) -> None:
        self.ended = "failed"
        state = self.state
        state._observe("after", self.started, ok=False)
        if isinstance(exc, _ERRORS):
            state._degrade("after", exc)
        state._undelivered(self.report, self.local_lease, self.now)

    def cancel(self) -> bool:
        """The pipeline was closed (shutdown) before the report was sent or answered."""
        if self.ended is not None:
            return False
        self.ended = "cancelled"
        state = self.state
        state._observe("after", self.started, ok=False)
        state._undelivered(self.report, self.local_lease, self.now)
        return True

    def landed(self, call: asyncio.Future[Any]) -> None:
        """How a call answered :data:`TIMED_OUT` ended (``RedisState._landed``)."""
        self.state._landed("after", self._landed_with, call)

    def _landed_with(self, result: Any) -> None:
        if result is None:
            self.state._undelivered(self.report, self.local_lease, self.now)


def _ignore(_result: Any) -> None:
    """A pin call that lands late: nothing to give back."""


def _charge_only(lease: Lease | None) -> Lease | None:
    """The part of a lease that charges (key, period) without releasing any reservation."""
    if lease is None:
        return None
    return Lease(lease.key_id, lease.second, 0, 0, lease.period, lease.period_end, shared=False)


def _health(row: dict[str, Any], now: float) -> Health:
    h = decode_health_row(row)
    trips, open_until = h["trips"], h["open_until"]
    state = "open" if open_until > now else "half_open" if trips else "closed"
    return Health(
        str(row["id"]),
        state,
        h["consecutive"],
        trips,
        max(0.0, open_until - now),
        h["lat"],
        h["requests"],
        h["failures"],
        h["last_failure"],
        h["wr"],
        h["wf"],
    )


_REPORT_PREFIX = os.urandom(8).hex() + "-"
_reports = itertools.count(1)
"""Report ids (each delivered once, even when a retry sends it twice): random per process,
then a counter, so no syscall per request. Redrawn in a forked child (``serve --workers N``
forks after imports): two workers with one prefix would skip each other's reports as done."""


def _new_report_ids() -> None:
    global _REPORT_PREFIX, _reports
    _REPORT_PREFIX = os.urandom(8).hex() + "-"
    _reports = itertools.count(1)


os.register_at_fork(after_in_child=_new_report_ids)


def _with_id(r: Report, rid: str) -> Report:
    """``dataclasses.replace(r, id=rid)`` without its field introspection (hot path)."""
    return new_report(r.outcomes, r.attempts, r.lease, r.answered_by, r.tokens, r.cost_micros, rid)
