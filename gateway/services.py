"""The objects one gateway process runs on, built by ``create_app`` and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.catalogue.catalogue import Config
from gateway.edge.lifecycle import Lifecycle
from gateway.frontends.base import FrontEnd
from gateway.observability.access import AccessLog
from gateway.observability.metrics import Metrics
from gateway.observability.traces import Tracing
from gateway.providers.base import Provider
from gateway.routing.router import Router
from gateway.state.base import StateStore
from gateway.tenancy.auth import Authenticator
from gateway.tenancy.shedding import InFlightGate


@dataclass(slots=True)
class Services:
    config: Config
    router: Router
    state: StateStore
    auth: Authenticator
    metrics: Metrics
    access: AccessLog
    providers: dict[str, Provider]
    demo: bool = False
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    gate: InFlightGate = field(default_factory=lambda: InFlightGate(1024, 256, 1.0))
    """The process's in-flight cap and bounded queue (``server.max_in_flight`` ...)."""
    frontends: dict[str, FrontEnd] = field(default_factory=dict)
    """Path under ``/v1/`` → the front-end API served there."""
    extras: dict[str, object] = field(default_factory=dict)
    tracing: Tracing | None = None
    """OpenTelemetry traces, when ``OTEL_*`` switches them on (:mod:`.observability.traces`)."""
