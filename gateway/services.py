"""The objects one gateway process runs on, built by ``create_app`` and passed down.

:class:`Generation` is everything built from one config (catalogue, router, providers and their
connection pools, auth, front-ends, the hot-path endpoints); :class:`Services` holds the current
one next to what lives as long as the process (state, metrics, access log, lifecycle, gate). A
config reload (:mod:`gateway.edge.reload`) builds a new generation off to the side and swaps the
one reference; a request holds the generation it started on until it ends.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.catalogue.catalogue import Config
from gateway.edge.lifecycle import Lifecycle
from gateway.frontends.base import FrontEnd
from gateway.observability.access import AccessLog
from gateway.observability.metrics import Metrics
from gateway.observability.traces import Tracing
from gateway.providers.base import Provider
from gateway.routing.router import Router
from gateway.state.base import StateStore
from gateway.tenancy.auth import Authenticator, KeyBook
from gateway.tenancy.shedding import InFlightGate

if TYPE_CHECKING:
    from gateway.edge.endpoint import Endpoint
    from gateway.edge.reload import Reloader


@dataclass(slots=True, eq=False)
class Generation:
    """Everything built from one config, swapped whole by a reload; frozen once serving."""

    config: Config
    router: Router
    auth: Authenticator
    providers: dict[str, Provider]
    frontends: dict[str, FrontEnd]
    """Path under ``/v1/`` → the front-end API served there."""
    thinking_key: bytes
    """Signs returned thinking blocks (kept across reloads when it is this process's own)."""
    number: int = 1
    loaded_at: float = field(default_factory=time.time)
    routes: dict[str, Endpoint] = field(default_factory=dict)
    """``POST`` path → the hot-path endpoint of one front-end API, on this generation."""
    users: int = 0
    """Requests running on this generation now."""
    _idle: asyncio.Event | None = field(default=None, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    def enter(self) -> None:
        """A request starts on this generation (it keeps it until :meth:`leave`)."""
        self.users += 1

    def leave(self) -> None:
        self.users -= 1
        if self._idle is not None and self.users == 0:
            self._idle.set()

    async def retire(self) -> None:
        """Wait for the requests still on this generation (none start: it was swapped out),
        then close its upstream connection pools."""
        if self._idle is None:
            self._idle = asyncio.Event()
        if self.users:
            await self._idle.wait()
        await self.aclose()

    async def aclose(self) -> None:
        """Close the providers' pools (once)."""
        if self._closed:
            return
        self._closed = True
        for provider in self.providers.values():
            await provider.aclose()


@dataclass(slots=True)
class Services:
    generation: Generation
    """The current config's objects; requests capture it once, at their start."""
    state: StateStore
    keys: KeyBook
    """This replica's copy of the virtual keys (every generation's auth reads it)."""
    metrics: Metrics
    access: AccessLog
    demo: bool = False
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    gate: InFlightGate = field(default_factory=lambda: InFlightGate(1024, 256, 1.0))
    """The process's in-flight cap and bounded queue (``server.max_in_flight`` ...)."""
    reloader: Reloader | None = None
    """Reloads the config (SIGHUP, ``POST /admin/reload``); set by ``create_app``."""
    extras: dict[str, object] = field(default_factory=dict)
    tracing: Tracing | None = None
    """OpenTelemetry traces, when ``OTEL_*`` switches them on (:mod:`.observability.traces`)."""

    @property
    def config(self) -> Config:
        return self.generation.config

    @property
    def router(self) -> Router:
        return self.generation.router

    @property
    def auth(self) -> Authenticator:
        return self.generation.auth

    @property
    def providers(self) -> dict[str, Provider]:
        return self.generation.providers

    @property
    def frontends(self) -> dict[str, FrontEnd]:
        return self.generation.frontends
