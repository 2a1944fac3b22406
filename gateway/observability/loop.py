"""Event-loop lag: how late a periodic timer fires, a direct measure of blocking on the loop."""

from __future__ import annotations

import asyncio
import contextlib
import time

from gateway.observability.metrics import Metrics
from gateway.observability.stats import Stats

INTERVAL_S = 0.5


class LoopLagMonitor:
    """A background task started in the app's lifespan; one sleep and two clock reads a tick."""

    def __init__(self, metrics: Metrics, stats: Stats, interval_s: float = INTERVAL_S) -> None:
        self._metrics = metrics
        self._stats = stats
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="glm-gateway-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self._interval)
            lag = max(0.0, time.perf_counter() - started - self._interval)
            self._metrics.loop_lag.observe(lag)
            self._stats.loop_lag(lag)
