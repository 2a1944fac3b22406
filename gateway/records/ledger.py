"""The append-only spend ledger: one row per answered request, written off the request path.

:meth:`Ledger.add` never waits: a row goes to an in-process queue, and a background task
writes the queue in batches (one ``INSERT ... ON CONFLICT (entry_id) DO NOTHING`` each, so a
batch retried after a lost answer writes each request once). While PostgreSQL does not answer,
rows wait in memory up to ``max_queued``, then spill to a local file (one JSON line each); once
it answers again the file is written first, then the queue. At shutdown what is left in memory
goes to the file, which the next start (of any process on this spool dir) drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger("glm_gateway.records")

SPOOL_PREFIX = "glm-gateway-ledger-"
BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
"""Waits between attempts to reach PostgreSQL again (the last one repeats)."""

INSERT = (
    "INSERT INTO glm_gateway_spend (entry_id, request_id, key_id, variant, provider, tokens_in,"
    " tokens_cached, tokens_out, cost_micros, at)"
    " SELECT e, r, k, v, p, ti, tc, tout, c, to_timestamp(t) FROM unnest("
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[],"
    " %s::bigint[], %s::bigint[], %s::float8[]) AS u(e, r, k, v, p, ti, tc, tout, c, t)"
    " ON CONFLICT (entry_id) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class Entry:
    entry_id: str
    """Unique per answered request, made by the gateway: what makes a retried batch write each
    row once (the client's ``x-request-id``, which may repeat, is ``request_id``)."""
    request_id: str
    key_id: str
    variant: str
    provider: str
    tokens_in: int
    tokens_cached: int
    tokens_out: int
    cost_micros: int
    at: float
    """Epoch seconds."""

    def line(self) -> bytes:
        return orjson.dumps(astuple(self)) + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> Entry:
        return cls(*orjson.loads(line))


Connect = Callable[[], Awaitable["AsyncConnection[Any]"]]


class Ledger:
    def __init__(
        self,
        connect: Connect,
        errors: tuple[type[BaseException], ...],
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_queued: int = 100_000,
        spool_dir: str,
        timeout_s: float = 5.0,
    ) -> None:
        self._connect = connect
        self._errors = errors
        self._batch = batch_size
        self._interval = flush_interval_s
        self._max = max_queued
        self._timeout = timeout_s
        self._queue: deque[Entry] = deque()
        self._spool = os.path.join(spool_dir, f"{SPOOL_PREFIX}{os.getpid()}.jsonl")
        self._spool_dir = spool_dir
        self.spooled = 0
        """Rows in spool files not yet written."""
        self.written = 0
        self.reachable = False
        self.last_error: str | None = None
        self._conn: AsyncConnection[Any] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def add(self, entry: Entry) -> None:
        """Queue one row; never waits (past ``max_queued`` it is appended to the spool file)."""
        if len(self._queue) < self._max:
            self._queue.append(entry)
            if len(self._queue) >= self._batch:
                self._wake.set()
            return
        self._spill((entry,))

    def pending_for(self, key_id: str, since: float) -> int:
        """Micro-USD of ``key_id`` at or after ``since`` still in memory (not yet written)."""
        return sum(e.cost_micros for e in self._queue if e.key_id == key_id and e.at >= since)

    def start(self) -> None:
        self._claim_orphans()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for up to ``timeout_s``); spill the rest; stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._queue:
            self._spill(self._queue)
            self._queue.clear()
        await self._drop()

    # --- the writer ----------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._closing and (failures or len(self._queue) < self._batch):
                wait = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1] if failures else self._interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                self._wake.clear()
            try:
                await self._drain_spool()
                while self._queue:
                    batch = [
                        self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))
                    ]
                    try:
                        await self._write(batch)
                    except BaseException:
                        self._queue.extendleft(reversed(batch))
                        raise
                failures = 0
                if self._closing:
                    return
            except self._errors as exc:
                failures += 1
                self._down(exc)
                if self._closing and failures > 2:
                    return

    async def _write(self, batch: list[Entry]) -> None:
        if self._conn is None or self._conn.closed:
            async with asyncio.timeout(self._timeout):
                self._conn = await self._connect()
        cols = list(zip(*(astuple(e) for e in batch), strict=True))
        async with asyncio.timeout(self._timeout):
            await self._conn.execute(INSERT, [list(c) for c in cols])
        self.written += len(batch)
        if self.last_error is not None:
            log.warning("ledger: PostgreSQL answers again; writing queued spend rows")
        self.reachable, self.last_error = True, None

    def _down(self, exc: BaseException) -> None:
        if self.reachable or self.last_error is None:
            log.warning(
                "ledger: PostgreSQL does not answer (%s); spend rows wait in memory (%d) and "
                "then in %s",
                _why(exc),
                len(self._queue),
                self._spool_dir,
            )
        self.reachable, self.last_error = False, _why(exc)
        conn, self._conn = self._conn, None
        if conn is not None:
            asyncio.get_running_loop().create_task(_close(conn))

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close(conn)

    # --- the spool -----------------------------------------------------------------------------

    def _spill(self, entries: Iterable[Entry]) -> None:
        data = b"".join(e.line() for e in entries)
        with open(self._spool, "ab") as f:
            f.write(data)
        self.spooled += data.count(b"\n")

    def _claim_orphans(self) -> None:
        """Spool files left by processes that are gone: ours to drain (renamed, so only one
        process takes each)."""
        for path in glob.glob(os.path.join(self._spool_dir, f"{SPOOL_PREFIX}*.jsonl*")):
            pid = _pid_of(path)
            if pid is None or (pid != os.getpid() and _alive(pid)):
                continue
            mine = f"{self._spool}.{os.path.basename(path)}.draining"
            with contextlib.suppress(OSError):
                os.replace(path, mine)
                with open(mine, "rb") as f:
                    self.spooled += sum(1 for _ in f)

    async def _drain_spool(self) -> None:
        for path in _rotate(self._spool):
            lines = _lines(path)
            for i in range(0, len(lines), self._batch):
                await self._write([Entry.parse(x) for x in lines[i : i + self._batch]])
            os.unlink(path)
            self.spooled = max(0, self.spooled - len(lines))


def _rotate(spool: str) -> list[str]:
    """The spool files to drain: the live one renamed first (rows spilled meanwhile go to a
    new one), then every ``.draining`` file of this process, oldest first."""
    if os.path.exists(spool):
        os.replace(spool, f"{spool}.{time.time_ns()}.draining")
    return sorted(glob.glob(f"{spool}.*.draining"))


def _lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return [line for line in f.readlines() if line.strip()]


def _pid_of(path: str) -> int | None:
    name = os.path.basename(path)[len(SPOOL_PREFIX) :]
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _close(conn: AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
