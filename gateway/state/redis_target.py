"""Which Redis the shared state lives in: one server, a Sentinel group, or a Cluster.

Exactly one of ``state.redis_url`` (``GLM_GATEWAY_REDIS_URL``), ``state.redis_sentinels``
(``GLM_GATEWAY_REDIS_SENTINELS``, with ``state.redis_sentinel_service`` /
``GLM_GATEWAY_REDIS_SENTINEL_SERVICE``, default ``mymaster``) and ``state.redis_cluster_nodes``
(``GLM_GATEWAY_REDIS_CLUSTER_NODES``) names it. Node lists are ``host:port,host:port,...``
(``[v6]:port`` for IPv6). Credentials: ``state.redis_username`` / ``redis_password`` for the
servers that hold the state (``GLM_GATEWAY_REDIS_USERNAME`` / ``_PASSWORD``; in single mode the
URL's own win) and ``state.redis_sentinel_password`` for the sentinels
(``GLM_GATEWAY_REDIS_SENTINEL_PASSWORD``). No ``redis`` import here: the loader validates with
it.

In Cluster mode every key carries the hash tag ``{prefix}``: each Lua script reads and writes
one deployment's, one key's and the global circuit keys in the same call, so all of them live in
one slot (one master, and its replicas for failover). Single and Sentinel mode keep the plain
prefix, so an upgrade finds the keys it wrote before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from gateway.catalogue.schema import StateConfig

Mode = Literal["single", "sentinel", "cluster"]
DEFAULT_SERVICE = "mymaster"
_NODE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.\-]+)):(?P<port>\d{1,5})$")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    mode: Mode
    url: str | None = None
    """Single mode: the server's URL."""
    nodes: tuple[tuple[str, int], ...] = ()
    """Sentinel mode: the sentinels; Cluster mode: the seed nodes."""
    service: str = DEFAULT_SERVICE
    """Sentinel mode: the master's service name."""
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    """The data servers' credentials (every mode; a single mode URL's own win)."""
    sentinel_password: str | None = field(default=None, repr=False)
    """Sentinel mode: the sentinels' own ``requirepass``."""

    def credentials(self) -> dict[str, str]:
        """``username`` / ``password`` keyword arguments for redis-py connections."""
        found = {"username": self.username, "password": self.password}
        return {k: v for k, v in found.items() if v}

    def describe(self) -> str:
        """For logs, ``check-config`` and ``/readyz``: never a password."""
        if self.mode == "single":
            return _where(self.url or "")
        nodes = ",".join(_join(h, p) for h, p in self.nodes)
        if self.mode == "sentinel":
            return f"sentinel service {self.service!r} via {nodes}"
        return f"cluster via {nodes}"

    def key_prefix(self, prefix: str) -> str:
        """The prefix every key starts with: hash-tagged in Cluster mode (one slot)."""
        return f"{{{prefix}}}" if self.mode == "cluster" else prefix


def parse_nodes(text: str, what: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` -> pairs; raises ValueError naming ``what`` and the bad item."""
    nodes: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        m = _NODE.match(item)
        port = int(m.group("port")) if m else 0
        if m is None or not 0 < port < 65536:
            raise ValueError(
                f"{what}: {item!r} is not host:port (expected host:port,host:port,...)"
            )
        nodes.append((m.group("v6") or m.group("host"), port))
    if not nodes:
        raise ValueError(f"{what}: empty (expected host:port,host:port,...)")
    return tuple(nodes)


def redis_target(state: StateConfig) -> RedisTarget | None:
    """The target ``state`` names, or None (memory backend, or no Redis set). Raises
    ValueError (one line per problem) when it names more than one mode or a bad node list."""
    problems = target_problems(state)
    if problems:
        raise ValueError("; ".join(problems))
    user, password = state.redis_username, state.redis_password
    if state.redis_cluster_nodes:
        return RedisTarget(
            "cluster",
            nodes=parse_nodes(state.redis_cluster_nodes, ""),
            username=user,
            password=password,
        )
    if state.redis_sentinels:
        return RedisTarget(
            "sentinel",
            nodes=parse_nodes(state.redis_sentinels, ""),
            service=state.redis_sentinel_service or DEFAULT_SERVICE,
            username=user,
            password=password,
            sentinel_password=state.redis_sentinel_password,
        )
    if state.redis_url:
        return RedisTarget("single", url=state.redis_url, username=user, password=password)
    return None


def redis_mode(state: StateConfig) -> Mode | None:
    """``single``, ``sentinel`` or ``cluster``; None for the memory backend."""
    if state.backend != "redis":
        return None
    if state.redis_cluster_nodes:
        return "cluster"
    return "sentinel" if state.redis_sentinels else "single"


def target_problems(state: StateConfig) -> list[str]:
    """What is wrong with the Redis settings, each as ``state.<key>: ...`` (empty: fine)."""
    named = [
        k for k in ("redis_url", "redis_sentinels", "redis_cluster_nodes") if getattr(state, k)
    ]
    problems: list[str] = []
    if len(named) > 1:
        problems.append(
            f"state.{named[1]}: set together with state.{named[0]}; exactly one of "
            "redis_url (GLM_GATEWAY_REDIS_URL), redis_sentinels (GLM_GATEWAY_REDIS_SENTINELS) "
            "and redis_cluster_nodes (GLM_GATEWAY_REDIS_CLUSTER_NODES) chooses the Redis mode"
        )
    for key in ("redis_sentinels", "redis_cluster_nodes"):
        value = getattr(state, key)
        if value:
            try:
                parse_nodes(value, f"state.{key}")
            except ValueError as exc:
                problems.append(str(exc))
    url = state.redis_url
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        problems.append("state.redis_url: expected redis://, rediss:// or unix:// URL")
    return problems


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _where(url: str) -> str:
    """host:port/db of a Redis URL: never the password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"
