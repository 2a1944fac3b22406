"""Config reload without a restart: SIGHUP or ``POST /admin/reload``.

One reload at a time. The config directory is read and validated off the event loop (the same
loader and process settings as at start); a config that does not load is refused with its
problems (file and key) and the running one keeps serving. A config that loads is built into a
complete new :class:`~gateway.services.Generation` (catalogue, router, providers, auth,
front-ends, endpoints) off to the side, then one reference is swapped: requests that started
before keep the generation they captured and finish on it; its upstream pools close when the
last of them is done. State (breakers, limits, budgets, keys) lives in the state backend under
deployment and key names, so it carries over untouched.

Every reload is logged (what changed, what needs a restart) and counted
(``glm_gateway_config_reloads_total{result}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.catalogue.catalogue import Config, config_secrets
from gateway.catalogue.changes import Changes, config_changes
from gateway.errors import ConfigError, GatewayError
from gateway.observability.redact import Redactor
from gateway.services import Generation, Services

log = logging.getLogger("glm_gateway.reload")

Build = Callable[[Config, Generation], Generation]
"""Builds the generation for a new config, given the running one (the app's wiring)."""


class ConfigInvalid(GatewayError):
    """422: the config on disk does not load; the running config keeps serving."""

    status = 422
    type = "invalid_request_error"
    code = "config_invalid"


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    generation: int
    """The generation serving after the attempt (unchanged when refused)."""
    changes: Changes = field(default_factory=Changes)
    problems: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        return {"status": "reloaded", "generation": self.generation, **self.changes.as_dict()}

    def error(self, source: str) -> ConfigInvalid:
        return ConfigInvalid(
            f"The config in {source} was not loaded; the running config (generation "
            f"{self.generation}) keeps serving. Problems: {'; '.join(self.problems)}",
            extra={"problems": list(self.problems)},
        )


class Reloader:
    def __init__(
        self,
        services: Services,
        load: Callable[[], Config],
        build: Build,
        redactor: Redactor,
    ) -> None:
        self._s = services
        self._load = load
        self._build = build
        self._redact = redactor
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        """Reloads asked for by signal, and old generations waiting for their last request."""
        self._retired: list[Generation] = []
        self.source = services.config.source_dir

    def hangup(self) -> None:
        """SIGHUP (called on the event loop): reload in the background."""
        self._spawn(self.reload("SIGHUP"))

    async def reload(self, via: str) -> ReloadResult:
        """Load, check and swap in the config; never raises for a bad config."""
        async with self._lock:
            old = self._s.generation
            try:
                config = await asyncio.to_thread(self._load)
                self._redact.learn(config_secrets(config))
                new = self._build(config, old)
            except ConfigError as exc:
                return self._refused(old, via, [line for line in str(exc).splitlines() if line])
            except Exception as exc:  # a config the loader passed but the wiring could not use
                log.exception("building the reloaded config failed")
                return self._refused(old, via, [f"{type(exc).__name__}: {exc}"])
            return self._swap(old, new, via)

    def _swap(self, old: Generation, new: Generation, via: str) -> ReloadResult:
        changes = config_changes(old.config, new.config)
        server = new.config.gateway.server
        life = self._s.lifecycle
        life.grace_s, life.drain_s = server.shutdown_grace_s, server.drain_timeout_s
        self._s.generation = new  # from here on every new request starts on it
        self._retired.append(old)
        self._spawn(self._retire(old))
        self.source = new.config.source_dir
        metrics = self._s.metrics
        metrics.config_reloads.labels("ok").inc()
        metrics.config_generation.set(new.number)
        metrics.config_loaded.set(new.loaded_at)
        for line in sorted(set(new.config.warnings) - set(old.config.warnings)):
            log.warning("reloaded config: %s", line)
        removed = set(changes.removed)
        for t in old.config.catalogue.targets:  # no circuit series for what is gone
            if t.id in removed:
                with contextlib.suppress(KeyError):
                    metrics.circuit.remove(t.id, t.variant.id, t.provider)
        log.warning(
            "config reloaded (%s) from %s: generation %d serving (%d deployments; %d request(s) "
            "finish on generation %d): %s",
            via,
            self.source,
            new.number,
            len(new.config.catalogue.targets),
            old.users,
            old.number,
            changes.describe(),
        )
        return ReloadResult(True, new.number, changes)

    def _refused(self, old: Generation, via: str, problems: list[str]) -> ReloadResult:
        problems = [self._redact(p) for p in problems] or ["the config did not load"]
        self._s.metrics.config_reloads.labels("invalid").inc()
        log.error(
            "config reload refused (%s), generation %d keeps serving: %s",
            via,
            old.number,
            " | ".join(problems),
        )
        return ReloadResult(False, old.number, problems=tuple(problems))

    async def _retire(self, old: Generation) -> None:
        await old.retire()
        self._retired.remove(old)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """At shutdown (after the drain): stop waiting, close every generation's pools."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for gen in [*self._retired, self._s.generation]:
            await gen.aclose()
        self._retired.clear()


def initial_metrics(services: Services) -> None:
    """The reload series exist from the start (0), with the first generation's number."""
    metrics, gen = services.metrics, services.generation
    metrics.config_reloads.labels("ok")
    metrics.config_reloads.labels("invalid")
    metrics.config_generation.set(gen.number)
    metrics.config_loaded.set(gen.loaded_at or time.time())
