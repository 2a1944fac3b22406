"""What observability reads of a routed request, as structural types.

The access log, the metrics and the dashboard take these shapes, not the router's classes, so
``observability/`` stays a floor that imports neither routing nor state:
:class:`gateway.routing.router.RouteState` and :class:`gateway.state.base.Health` satisfy them
without naming them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gateway.catalogue.target import Bill, Target


class Valued(Protocol):
    @property
    def value(self) -> str: ...


class FailureRecord(Protocol):
    @property
    def cls(self) -> Valued: ...


class AttemptRecord(Protocol):
    @property
    def target(self) -> Target: ...
    @property
    def failure(self) -> FailureRecord | None: ...
    @property
    def status(self) -> int: ...
    @property
    def duration_s(self) -> float: ...
    def describe(self) -> dict[str, Any]: ...


class PlanRecord(Protocol):
    @property
    def targets(self) -> Sequence[Target]: ...


class RouteRecord(Protocol):
    """One request's routing: its attempts, who answered, usage and adaptations."""

    @property
    def plan(self) -> PlanRecord: ...
    @property
    def fallback_reason(self) -> str | None: ...
    @property
    def attempts(self) -> Sequence[AttemptRecord]: ...
    @property
    def target(self) -> Target | None: ...
    @property
    def usage(self) -> dict[str, Any] | None: ...
    @property
    def adaptations(self) -> list[str]: ...
    @property
    def backoff_s(self) -> float: ...
    @property
    def bill(self) -> Bill | None: ...


class CircuitRecord(Protocol):
    """One deployment's health as shared state reports it."""

    @property
    def target_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def open_for_s(self) -> float: ...
    @property
    def latency_s(self) -> float | None: ...
    @property
    def requests(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def last_failure(self) -> str | None: ...
    @property
    def error_rate(self) -> float | None: ...
