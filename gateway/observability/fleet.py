"""``/metrics`` and the dashboard across the workers of one ``serve --workers N``.

Each worker keeps its own metrics and rolling stats (plain numbers, no lock, no shared
memory on the request path) and answers its siblings on a Unix socket in a private directory
the parent created (mode 0700): one snapshot of its metric families and raw stats slots, taken
on its event loop when asked. The worker that serves a scrape or ``/dashboard/data`` gathers
the others' snapshots (concurrently, ``PEER_TIMEOUT_S`` each; a worker that does not answer,
such as one being restarted, is left out and logged) and adds them to its own:

- counters and histograms: summed per series (histogram buckets are cumulative, so the sums
  are too);
- gauges: as :data:`gateway.observability.metrics.GAUGE_MERGE` says (``sum`` for in-flight,
  queued and loop tasks, ``max`` for degraded, ``min`` for the config generation); any other
  gauge is the serving worker's own value, which it has just read from the shared state
  (circuits, state backend up) or which every worker holds alike (build info, plan quota);
- rolling stats: slots of the same second added (:meth:`Stats.merged`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
from collections.abc import Callable, Iterable
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from gateway.observability.metrics import GAUGE_MERGE, Metrics
from gateway.observability.stats import Stats

log = logging.getLogger("glm_gateway.fleet")

PEER_TIMEOUT_S = 1.0
ASK = b"snapshot\n"

Snapshot = tuple[list[Metric], tuple[Any, ...]]
"""A worker's metric families and its :meth:`Stats.raw`."""


class Fleet:
    """This worker's place among ``size`` siblings answering in ``directory``."""

    def __init__(self, directory: str, index: int, size: int) -> None:
        self.directory = directory
        self.index = index
        self.size = size
        self._server: asyncio.AbstractServer | None = None

    def _path(self, index: int) -> str:
        return os.path.join(self.directory, f"{index}.sock")

    async def start(self, metrics: Metrics, stats: Stats) -> None:
        """Answer siblings' requests for this worker's snapshot (on the running loop)."""

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readline()
                writer.write(pickle.dumps(snapshot(metrics, stats)))
                await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        path = self._path(self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by the worker this one replaces
        self._server = await asyncio.start_unix_server(answer, path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def gather(self) -> list[Snapshot]:
        """The other workers' snapshots; those that do not answer are left out."""
        others = [i for i in range(self.size) if i != self.index]
        got = await asyncio.gather(*(self._ask(i) for i in others))
        return [g for g in got if g is not None]

    async def _ask(self, index: int) -> Snapshot | None:
        try:
            async with asyncio.timeout(PEER_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(self._path(index))
                try:
                    writer.write(ASK)
                    data = await reader.read()
                finally:
                    writer.close()
            return cast(Snapshot, pickle.loads(data))  # our own workers, 0700 dir
        except (OSError, TimeoutError, pickle.UnpicklingError, EOFError) as exc:
            log.warning("worker %d did not answer for the fleet's metrics: %r", index, exc)
            return None

    async def render(self, metrics: Metrics, stats: Stats) -> bytes:
        """``/metrics`` for the whole fleet."""
        own = snapshot(metrics, stats)
        families = merge_families([own[0], *(s[0] for s in await self.gather())])
        return render_families(families)

    async def combined(self, metrics: Metrics, stats: Stats) -> tuple[Metrics, Stats]:
        """A view of the metrics and the stats of every worker, for the dashboard."""
        own = snapshot(metrics, stats)
        peers = await self.gather()
        families = merge_families([own[0], *(s[0] for s in peers)])
        merged_stats = Stats.merged([own[1], *(s[1] for s in peers)])
        return cast(Metrics, _MergedView(metrics, families)), merged_stats


def snapshot(metrics: Metrics, stats: Stats) -> Snapshot:
    return list(metrics.registry.collect()), stats.raw()


def merge_families(lists: Iterable[list[Metric]]) -> list[Metric]:
    """Families of several workers, the first list's own values first (see module doc)."""
    order: list[str] = []
    heads: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in lists:
        for fam in families:
            if fam.name not in heads:
                heads[fam.name] = fam
                order.append(fam.name)
                values[fam.name] = {}
            mode = _mode(fam)
            series = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                old = series.get(key)
                series[key] = s.value if old is None else _combine(mode, old, s.value)
    out = []
    for name in order:
        head = heads[name]
        fam = Metric(head.name, head.documentation, head.type, head.unit)
        for (sample_name, labels), value in values[name].items():
            fam.add_sample(sample_name, dict(labels), value)
        out.append(fam)
    return out


def _mode(fam: Metric) -> str:
    if fam.type != "gauge":
        return "sum"
    return GAUGE_MERGE.get(fam.name, "own")


def _combine(mode: str, old: float, new: float) -> float:
    if mode == "sum":
        return old + new
    if mode == "max":
        return max(old, new)
    if mode == "min":
        return min(old, new)
    return old  # own: the first worker's (the serving one's) value


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def render_families(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


class _MergedView:
    """Reads like :class:`Metrics` for the dashboard: each metric attribute's ``collect()``
    returns the fleet's merged family."""

    def __init__(self, metrics: Metrics, families: list[Metric]) -> None:
        self._metrics = metrics
        self._by_name = {f.name: f for f in families}

    def __getattr__(self, attr: str) -> Any:
        metric = getattr(self._metrics, attr)
        collect: Callable[[], list[Metric]] | None = getattr(metric, "collect", None)
        if collect is None:
            return metric
        names = [f.name for f in collect()]
        return _Families([self._by_name[n] for n in names if n in self._by_name])
