"""The Redis backend's degraded mode: the flag, the journal, and the way back.

While degraded, hot-path calls go straight to the replica's local state, and what ``after``
could not deliver is journaled. A background task retries a recovery step (ping, replay the
journal, re-create lost key records) with backoff; when one succeeds the backend is shared again.
No ``redis`` import here: the step is a callable from :mod:`gateway.state.redis`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.observability.metrics import Metrics
from gateway.state.base import Report

JOURNAL_MAX = 20_000
RECOVER_FIRST_S = 0.05
RECOVER_MAX_S = 1.0
log = logging.getLogger("glm_gateway.state")


class Outage:
    def __init__(self, where: str, metrics: Metrics | None) -> None:
        self._where = where
        self._metrics = metrics
        self.degraded = False
        self.journal: deque[tuple[Report, float]] = deque()
        self._task: asyncio.Task[None] | None = None

    def begin(self, op: str, exc: BaseException, recover: Callable[[], Awaitable[int]]) -> None:
        """Go (or stay) degraded after ``op`` failed, and make sure a recovery task runs."""
        if not self.degraded:
            self.degraded = True
            log.warning(
                "state backend redis (%s) did not answer %s (%s: %s): serving from local "
                "state until it is back",
                self._where,
                op,
                type(exc).__name__,
                exc,
            )
            if self._metrics is not None:
                self._metrics.state_degraded.set(1)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._recover(recover))

    async def _recover(self, step: Callable[[], Awaitable[int]]) -> None:
        delay = RECOVER_FIRST_S
        while True:
            await asyncio.sleep(delay)
            try:
                replayed = await step()
            except Exception:  # any failure of the step means: not back yet
                delay = min(delay * 2, RECOVER_MAX_S)
                continue
            self.degraded = False
            if self._metrics is not None:
                self._metrics.state_degraded.set(0)
                self._metrics.state_resyncs.inc()
            log.warning(
                "state backend redis (%s) is back: replayed %d records", self._where, replayed
            )
            return

    def remember(self, report: Report, now: float) -> None:
        """Journal a report for the resync; when full, keep the spend and drop the rest."""
        if len(self.journal) >= JOURNAL_MAX:
            old, at = self.journal.popleft()
            if old.lease is not None and old.cost_micros:
                spend = Report(lease=old.lease, cost_micros=old.cost_micros, id=old.id)
                self.journal.append((spend, at))
                if len(self.journal) > JOURNAL_MAX:
                    self.journal.popleft()
        self.journal.append((report, now))

    def take(self) -> list[tuple[Report, float]]:
        batch = list(self.journal)
        self.journal.clear()
        return batch

    def put_back(self, batch: list[tuple[Report, float]]) -> None:
        self.journal.extendleft(reversed(batch))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
