"""Plan quota: read what a provider surface says is left of its plan, on a schedule.

Only surfaces with ``quota:`` in config are read, each every ``interval_s``, by one background
task; never on the request path. Z.ai's endpoint (``GET /api/monitor/usage/quota/limit``, the
same path on BigModel) is undocumented: its shape here is the one community tools read
(CodexBar, openusage, zai-quota)::

    {"code": 200, "success": true, "data": {"limits": [
        {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "usage": <limit>,
         "currentValue": <used>, "remaining": <left>, "percentage": <used %>,
         "nextResetTime": <epoch ms>}, {"type": "TIME_LIMIT", ...}]}}

The reader is tolerant: a window is read from ``percentage``, else ``currentValue`` over
``usage``, else ``remaining`` over ``usage``; entries it cannot read are skipped; an answer it
cannot read at all keeps the last reading and is logged once per change, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.catalogue.catalogue import Config
from gateway.catalogue.schema import DEFAULT_SURFACE, QuotaConfig
from gateway.providers.base import UpstreamConnectionError, UpstreamTimeout

log = logging.getLogger(__name__)

Fetch = Callable[[str, Mapping[str, str], float], Awaitable[tuple[int, bytes]]]
"""``(url, headers, timeout) -> (status, body)``: the upstream seam's GET."""
_UNITS = {1: "d", 3: "h", 5: "m", 6: "w"}
"""``unit`` codes as community readers decode them (1 day, 3 hour, 5 minute); 6 is a guess."""


@dataclass(frozen=True, slots=True)
class QuotaWindow:
    """One window of a plan as its host reported it."""

    window: str
    """``tokens_5h``, ``time_1d``...: the entry's type and period."""
    remaining: float
    """Share left, 0 to 1."""
    resets_at: float | None = None
    """Epoch seconds."""


@dataclass(frozen=True, slots=True)
class QuotaSource:
    provider: str
    surface: str
    quota: QuotaConfig
    api_key: str | None = field(repr=False)


def quota_sources(config: Config) -> list[QuotaSource]:
    """Every surface with a ``quota`` whose key is set (its deployments were built)."""
    keys = {(t.provider, t.surface): t.api_key for t in config.catalogue.targets}
    out = []
    for name, cfg in config.catalogue.providers.items():
        wanted = [(DEFAULT_SURFACE, cfg.quota), *((s, v.quota) for s, v in cfg.surfaces.items())]
        for surface, quota in wanted:
            if quota is not None and (name, surface) in keys:
                out.append(QuotaSource(name, surface, quota, keys[(name, surface)]))
    return out


def parse_quota(body: bytes) -> list[QuotaWindow] | None:
    """The windows an answer holds; None when it is not a quota answer at all."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    limits = data.get("limits") if isinstance(data, dict) else None
    if not isinstance(limits, list):
        return None
    return [w for entry in limits if isinstance(entry, dict) and (w := _window(entry))]


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        out = float(value)
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def _window(entry: dict[str, Any]) -> QuotaWindow | None:
    pct, limit = _num(entry.get("percentage")), _num(entry.get("usage"))
    used, left = _num(entry.get("currentValue")), _num(entry.get("remaining"))
    if pct is not None:
        share = 1 - pct / 100
    elif limit and used is not None:
        share = 1 - used / limit
    elif limit and left is not None:
        share = left / limit
    else:
        return None
    kind = str(entry.get("type") or "limit").lower().removesuffix("_limit")
    unit, number = _num(entry.get("unit")), _num(entry.get("number"))
    span = _UNITS.get(int(unit)) if unit is not None else None
    label = f"{kind}_{int(number)}{span}" if span and number else kind
    reset = _num(entry.get("nextResetTime"))
    if reset is not None and reset > 1e12:
        reset /= 1000
    return QuotaWindow(label, min(max(share, 0.0), 1.0), reset)


def spent_until(windows: list[QuotaWindow], now: float) -> float | None:
    """When a spent token window resets (the latest, if several are spent), else None.

    Only ``tokens*`` windows gate chat: Z.ai's ``TIME_LIMIT`` counts MCP tool time (web
    search and the like), which does not stop the plan serving the model.
    """
    ends = [
        w.resets_at
        for w in windows
        if w.window.startswith("tokens") and w.remaining <= 0 and (w.resets_at or 0) > now
    ]
    return max((e for e in ends if e is not None), default=None)


Report = Callable[[QuotaSource, list[QuotaWindow]], Awaitable[None]]


class QuotaReader:
    """One task reading every configured quota endpoint when it is due."""

    def __init__(
        self,
        config: Callable[[], Config],
        fetch: Fetch,
        report: Report,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config, self._fetch, self._report, self._clock = config, fetch, report, clock
        self._due: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._said: dict[tuple[str, str], str] = {}

    def start(self) -> None:
        """Start reading (nothing runs while no surface has a ``quota``)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="plan-quota")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            sources = quota_sources(self._config())  # a reload changes them
            now = self._clock()
            for src in sources:
                if self._due.get((src.provider, src.surface), 0.0) <= now:
                    self._due[(src.provider, src.surface)] = now + src.quota.interval_s
                    await self.read(src)
            await asyncio.sleep(1.0 if sources else 5.0)

    async def read(self, src: QuotaSource) -> list[QuotaWindow] | None:
        """Read one surface's quota now and report it; None (logged) when it could not."""
        headers = {"Accept": "application/json"}
        if src.api_key:
            headers["Authorization"] = f"Bearer {src.api_key}"
        try:
            status, body = await self._fetch(src.quota.url, headers, src.quota.timeout_s)
        except (UpstreamTimeout, UpstreamConnectionError) as exc:
            self._failed(src, str(exc))
            return None
        windows = parse_quota(body) if status == 200 else None
        if windows is None:
            self._failed(src, f"HTTP {status}, not a quota answer")
            return None
        self._said.pop((src.provider, src.surface), None)
        await self._report(src, windows)
        return windows

    def _failed(self, src: QuotaSource, why: str) -> None:
        if self._said.get((src.provider, src.surface)) != why:
            self._said[(src.provider, src.surface)] = why
            log.warning("plan quota of %s surface %s not read: %s", src.provider, src.surface, why)
        return None
