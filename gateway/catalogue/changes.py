"""What a config reload changes, and which of it a running process can take without a restart.

Deployments are compared by id (``provider/variant``) and content; ``gateway.yaml`` by section.
What is bound when the process starts is named but not applied: the listening address, the
in-flight gate and header cap (fixed in the server and the dispatcher), the state backend and the
breaker (the shared state is built on them), and logging (handlers installed at start).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.catalogue.catalogue import Config

RESTART_SECTIONS = frozenset({"state", "breaker", "logging"})
"""``gateway.yaml`` sections a reload reads but does not apply."""
RESTART_SERVER_KEYS = frozenset(
    {"host", "port", "max_header_bytes", "max_in_flight", "max_queued", "queue_timeout_s"}
)
"""``server.*`` keys a reload reads but does not apply (the rest apply: body cap, grace, drain,
trusted proxies)."""


@dataclass(frozen=True, slots=True)
class Changes:
    added: tuple[str, ...] = ()
    """Deployment ids that serve from now on."""
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    """Deployments still there whose settings changed (URL, model id, key, price, limits...)."""
    applied: tuple[str, ...] = ()
    """Other settings that changed and apply (``routing``, ``aliases``, ``server.max_body_bytes``,
    ``models`` for the catalogue of variants)."""
    not_applied: tuple[str, ...] = ()
    """Settings that changed but need a restart (``server.port``, ``state``...)."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.modified or self.applied or self.not_applied)

    def describe(self) -> str:
        """One line for the log: what changed, and what waits for a restart."""
        if self.empty:
            return "no changes"
        parts = [
            f"{label}: {', '.join(items)}"
            for label, items in (
                ("deployments added", self.added),
                ("deployments removed", self.removed),
                ("deployments changed", self.modified),
                ("settings changed", self.applied),
                ("changed, not applied (needs a restart)", self.not_applied),
            )
            if items
        ]
        return "; ".join(parts)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "deployments_added": list(self.added),
            "deployments_removed": list(self.removed),
            "deployments_changed": list(self.modified),
            "settings_changed": list(self.applied),
            "not_applied": list(self.not_applied),
        }


def config_changes(old: Config, new: Config) -> Changes:
    """What differs between the running config ``old`` and ``new``."""
    before = {t.id: t for t in old.catalogue.targets}
    after = {t.id: t for t in new.catalogue.targets}
    applied: list[str] = []
    held: list[str] = []
    if old.catalogue.variants != new.catalogue.variants:
        applied.append("models")
    for name in type(new.gateway).model_fields:
        was, now = getattr(old.gateway, name), getattr(new.gateway, name)
        if name == "providers" or was == now:  # providers: compared as deployments
            continue
        if name == "server":
            for key in type(now).model_fields:
                if getattr(was, key) != getattr(now, key):
                    (held if key in RESTART_SERVER_KEYS else applied).append(f"server.{key}")
        else:
            (held if name in RESTART_SECTIONS else applied).append(name)
    return Changes(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        modified=tuple(sorted(k for k in after.keys() & before.keys() if after[k] != before[k])),
        applied=tuple(applied),
        not_applied=tuple(held),
    )
