"""What a gateway with a database holds: key sync, the ledger, recovery of lost keys, status.

Nothing on the request path waits for PostgreSQL. Keys are served from this replica's
:class:`~gateway.tenancy.auth.KeyBook` and the state backend; a background task reads key
changes every ``database.key_sync_s`` (and at once when the state's keys version moves) and
copies them into both. Spend rows go to the :class:`~gateway.records.ledger.Ledger` queue.
The one path that asks PostgreSQL while a request waits is :meth:`Records.restore`: the state
backend refused a key as unknown that PostgreSQL holds (a Redis ``FLUSHALL``, a restart
without persistence), bounded by ``connect_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import Gauge

from gateway.catalogue.schema import DatabaseConfig
from gateway.observability.metrics import Metrics
from gateway.records.db import DatabaseError, connect, errors, where
from gateway.records.keystore import PgKeys
from gateway.records.ledger import Entry, Ledger
from gateway.records.migrations import migrate
from gateway.state.base import Lease, Report, StateStore, StateUnavailable
from gateway.tenancy.keys import KeyRecord, period_start, period_window

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from gateway.observability.access import Record
    from gateway.tenancy.auth import KeyBook

T = TypeVar("T")
log = logging.getLogger("glm_gateway.records")
RESET_DELAY_S = 3.0
"""After the state backend lost its data: wait before putting spend back from the ledger."""
FULL_SYNC_EVERY = 30
"""Key syncs between two full reads (a write whose seq committed late is not missed)."""


class Records:
    def __init__(self, cfg: DatabaseConfig, state: StateStore, metrics: Metrics) -> None:
        assert cfg.url is not None
        self._url = cfg.url
        self.where = where(cfg.url)
        self._cfg = cfg
        self._state = state
        self._errors = errors()
        self.ledger = Ledger(
            self._connect,
            self._errors,
            batch_size=cfg.batch_size,
            flush_interval_s=cfg.flush_interval_s,
            max_queued=cfg.max_queued,
            spool_dir=cfg.spool_dir or tempfile.gettempdir(),
        )
        self._conn: AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._book: KeyBook | None = None
        self._seq = 0
        self._syncs = 0
        self._migrated = False
        self.reachable = False
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resets: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._prefix = os.urandom(6).hex()
        self._metrics = metrics
        self._gauges(metrics)

    def _gauges(self, metrics: Metrics) -> None:
        r = metrics.registry
        up = Gauge(
            "glm_gateway_database_up", "1 while PostgreSQL (keys, ledger) answers.", registry=r
        )
        up.set_function(lambda: 1.0 if self.reachable and self.ledger.reachable else 0.0)
        queued = Gauge(
            "glm_gateway_ledger_queued",
            "Spend rows not yet written to PostgreSQL, in memory or spilled to the spool file.",
            ["where"],
            registry=r,
        )
        queued.labels("memory").set_function(lambda: float(self.ledger.queued))
        queued.labels("spool").set_function(lambda: float(self.ledger.spooled))

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, book: KeyBook) -> None:
        """Migrate and load the keys (one bounded attempt: PostgreSQL down is not fatal, the
        background task keeps trying), then start the ledger writer and the key sync."""
        self._book = book
        with contextlib.suppress(DatabaseError):
            await self.sync()
        self.ledger.start()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def aclose(self) -> None:
        for task in (self._task, self._resets):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.ledger.aclose()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def refresh(self) -> None:
        """Read key changes now (the state's keys version moved), off the request path."""
        self._wake.set()

    async def _loop(self) -> None:
        resyncs = _count(self._metrics.state_resyncs)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._cfg.key_sync_s)
            self._wake.clear()
            now = _count(self._metrics.state_resyncs)
            if now > resyncs:  # Redis came back after an outage: it may have lost its data
                resyncs = now
                self.reset()
            with contextlib.suppress(DatabaseError):
                await self.sync()

    # --- keys ----------------------------------------------------------------------------------

    async def sync(self) -> int:
        """Copy key records changed since the last look into the KeyBook and the state
        backend; the number copied. DatabaseError while PostgreSQL does not answer."""
        self._syncs += 1
        since = 0 if self._syncs % FULL_SYNC_EVERY == 0 else self._seq
        seq, records = await self._keys(lambda k: k.changes(since))
        self._seq = max(self._seq, seq)
        for record in records:
            if self._book is not None:
                self._book.put(record)
            if since == 0 and self._syncs > 1:
                continue  # a full re-read: the state copy is refreshed when a write moves seq
            with contextlib.suppress(StateUnavailable):
                await self._state.put_key(record)
        return len(records)

    async def put_key(self, record: KeyRecord) -> None:
        await self._keys(lambda k: k.put(record))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self._keys(lambda k: k.get(key_id))

    async def list_keys(self) -> list[KeyRecord]:
        return await self._keys(lambda k: k.all())

    async def restore(self, key_id: str, *, spend: bool = False) -> KeyRecord | None:
        """The state backend lost ``key_id`` (FLUSHALL, a restart without persistence): put
        PostgreSQL's record back at once (a request waits for it; PostgreSQL down: this replica's
        copy), and :meth:`reset` the rest.

        With ``spend``: also put on the state's spend counter the key's spend this period as
        the ledger has it (plus rows still queued here) when the counter shows less. Replicas
        doing it at once take turns on an advisory lock: the second finds the record and the
        spend back, and adds nothing. None when PostgreSQL or the state do not answer."""
        try:
            record = await self._keys(lambda k: self._restore(k, key_id, spend))
        except StateUnavailable:  # the state went away meanwhile: its local copy answers now
            return self._book.cached(key_id) if self._book is not None and not spend else None
        except DatabaseError:
            record = await self._from_cache(key_id) if not spend else None
            if record is None:
                return None
        if not spend:
            self.reset()
        return record

    async def _from_cache(self, key_id: str) -> KeyRecord | None:
        """PostgreSQL does not answer either: this replica's copy of the record (as of its
        last sync) goes back into the state backend."""
        record = self._book.cached(key_id) if self._book is not None else None
        if record is None:
            return None
        try:
            await self._state.put_key(record)
        except StateUnavailable:
            return None
        log.warning("key %s was missing from the state backend: restored from the cache", key_id)
        return record

    def reset(self) -> None:
        """The state backend may have lost its data (its keys version went back, a key went
        missing, or Redis came back after an outage): restore every key and its spend, in the
        background, after ``RESET_DELAY_S`` (replicas that served from local state meanwhile
        have replayed their journals by then: that spend is not added twice). Where nothing
        was lost, the ledger's spend is not above the state's and nothing is added."""
        if self._resets is None or self._resets.done():
            self._resets = asyncio.get_running_loop().create_task(self._restore_all())

    async def _restore_all(self) -> None:
        await asyncio.sleep(RESET_DELAY_S)
        try:
            ids = [r.id for r in await self.list_keys()]
        except DatabaseError:
            return
        for key_id in ids:
            await self.restore(key_id, spend=True)

    async def _restore(self, k: PgKeys, key_id: str, spend: bool) -> KeyRecord | None:
        async with k.conn.transaction():
            await k.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"glmgw-key:{key_id}",)
            )
            record = await k.get(key_id)
            if record is None:
                return None
            if await self._state.get_key(key_id) is None:
                await self._state.put_key(record)
                log.warning("key %s was missing from the state backend: restored", key_id)
            if not spend or record.revoked or record.budget_usd is None:
                return record
            now = time.time()
            since = period_start(record.budget_period, now)
            cur = await k.conn.execute(
                "SELECT coalesce(sum(cost_micros), 0) FROM glm_gateway_spend"
                " WHERE key_id = %s AND at >= to_timestamp(%s)",
                (key_id, since if math.isfinite(since) else 0.0),
            )
            row = await cur.fetchone()
            spent = (int(row[0]) if row else 0) + self.ledger.pending_for(key_id, since)
            period, end = period_window(record.budget_period, now)
            have = await self._state.key_spend(key_id, period)
            if spent > have:
                lease = Lease(key_id, int(now), 0, 0, period, end)
                await self._state.after(Report(lease=lease, cost_micros=spent - have), now)
                log.warning(
                    "key %s: spend this period restored from the ledger ($%.6f)",
                    key_id,
                    spent / 1e6,
                )
            return record

    async def _keys(self, call: Callable[[PgKeys], Awaitable[T]]) -> T:
        """Run ``call(PgKeys)`` on the keys connection (one at a time), bounded in time."""
        async with self._lock:
            try:
                async with asyncio.timeout(self._cfg.connect_timeout_s * 2):
                    if self._conn is None or self._conn.closed:
                        self._conn = await self._connect()
                    if not self._migrated:
                        await migrate(self._conn)
                        self._migrated = True
                    result = await call(PgKeys(self._conn))
            except DatabaseError as exc:
                self._down(str(exc))
                raise
            except self._errors as exc:
                self._down(str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc))
                raise DatabaseError(f"{self.where}: {self.last_error}") from None
        if not self.reachable:
            log.info("PostgreSQL at %s answers: keys are read from it", self.where)
        self.reachable, self.last_error = True, None
        return result

    def _down(self, why: str) -> None:
        if self.reachable or self.last_error is None:
            log.warning(
                "PostgreSQL at %s does not answer (%s): keys are served from the cache, spend "
                "rows are queued",
                self.where,
                why,
            )
        self.reachable, self.last_error = False, why
        conn, self._conn = self._conn, None
        if conn is not None:
            asyncio.get_running_loop().create_task(conn.close())

    async def _connect(self) -> AsyncConnection[Any]:
        return await connect(self._url, self._cfg.connect_timeout_s)

    # --- the ledger ----------------------------------------------------------------------------

    def on_request(self, rec: Record) -> None:
        """The access log's hook: one ledger row for a request a deployment answered."""
        rs = rec.rs
        if rs is None or rs.target is None:
            return
        cost = math.ceil(rs.target.cost_micros(rec.tokens_in, rec.tokens_out, rec.tokens_cached))
        self.ledger.add(
            Entry(
                f"{self._prefix}-{next(self._ids):x}",
                rec.request_id,
                rec.key_id,
                rec.variant,
                rec.provider,
                rec.tokens_in,
                rec.tokens_cached,
                rec.tokens_out,
                cost,
                time.time(),
            )
        )

    def status(self) -> dict[str, Any]:
        """``/readyz`` details and the dashboard: never the password."""
        ok = self.reachable and self.ledger.reachable
        return {
            "database": self.where,
            "reachable": ok,
            "degraded": not ok,
            "ledger_queued": self.ledger.queued,
            "ledger_spooled": self.ledger.spooled,
            "ledger_written": self.ledger.written,
            "error": self.last_error or self.ledger.last_error,
        }


def _count(counter: Any) -> float:
    """A label-less counter's value, through prometheus-client's public ``collect``."""
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                return float(sample.value)
    return 0.0
