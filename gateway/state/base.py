"""The StateStore seam: state that replicas must share (circuits, cooldowns, health).

Two backends pass one contract suite (``tests/contract/test_state_contract.py``):
:mod:`gateway.state.memory` (one process) and :mod:`gateway.state.redis` (many replicas).
The router makes at most one call before forwarding (:meth:`StateStore.view`) and one after
(:meth:`StateStore.record`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one upstream attempt did, as far as shared state cares."""

    target_id: str
    ok: bool
    latency_s: float
    failure_class: str | None = None
    cooldown_s: float | None = None
    """Open the circuit for at least this long (Retry-After, a quota reset, a bad key)."""


@dataclass(frozen=True, slots=True)
class View:
    """Shared state as the planner needs it before a request."""

    open_circuits: dict[str, float] = field(default_factory=dict)
    """target id -> seconds until it may be tried again."""
    latency_s: dict[str, float] = field(default_factory=dict)
    """target id -> recent mean latency of successful attempts."""


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


class StateStore(Protocol):
    async def view(self, now: float) -> View:
        """Open circuits and latencies. A circuit whose cooldown has passed turns half-open and
        lets exactly one caller probe it (the first view() after expiry gets it closed-looking,
        the others still see it open until that probe's outcome is recorded or its lease ends).
        """
        ...

    async def record(self, outcomes: Sequence[Outcome], now: float) -> None: ...

    async def health(self, now: float) -> list[Health]: ...

    async def ping(self) -> bool:
        """True when the backend is reachable (readiness)."""
        ...

    async def aclose(self) -> None: ...
