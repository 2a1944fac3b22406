"""Process settings from the environment (everything else lives in the config directory)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    config_dir: str | None
    """``GLM_GATEWAY_CONFIG_DIR``; None means the packaged ``gateway/config/``."""
    redis_url: str | None
    """``GLM_GATEWAY_REDIS_URL``: overrides ``state.redis_url`` and selects the Redis backend."""
    log_level: str | None
    database_url: str | None = None
    """``GLM_GATEWAY_DATABASE_URL``: overrides ``database.url`` (PostgreSQL records)."""
    redis_sentinels: str | None = None
    """``GLM_GATEWAY_REDIS_SENTINELS`` (+ ``GLM_GATEWAY_REDIS_SENTINEL_SERVICE``): Sentinel mode."""
    redis_sentinel_service: str | None = None
    redis_cluster_nodes: str | None = None
    """``GLM_GATEWAY_REDIS_CLUSTER_NODES``: Cluster mode. Any Redis variable set replaces the
    config's Redis mode (``redis_target`` refuses two modes set at once)."""
    redis_username: str | None = None
    """``GLM_GATEWAY_REDIS_USERNAME``, ``GLM_GATEWAY_REDIS_PASSWORD`` (the servers holding the
    state, any mode) and ``GLM_GATEWAY_REDIS_SENTINEL_PASSWORD`` (the sentinels): each replaces
    the config's ``state.redis_username`` / ``redis_password`` / ``redis_sentinel_password``."""
    redis_password: str | None = None
    redis_sentinel_password: str | None = None

    def redis_state(self) -> dict[str, str | None] | None:
        """The ``state`` keys the environment sets, or None. A Redis mode variable sets
        ``backend: redis`` and replaces the config's mode; credentials alone apply to the
        config's mode."""
        keys: dict[str, str | None] = {}
        if self.redis_url or self.redis_sentinels or self.redis_cluster_nodes:
            keys = {
                "backend": "redis",
                "redis_url": self.redis_url,
                "redis_sentinels": self.redis_sentinels,
                "redis_cluster_nodes": self.redis_cluster_nodes,
            }
        if self.redis_sentinel_service:  # else the config's (or the default) stands
            keys["redis_sentinel_service"] = self.redis_sentinel_service
        for name in ("redis_username", "redis_password", "redis_sentinel_password"):
            if getattr(self, name):
                keys[name] = getattr(self, name)
        return keys or None

    def redis_mode_set(self) -> bool:
        """A Redis mode variable is set (URL, sentinels or cluster nodes)."""
        return bool(self.redis_url or self.redis_sentinels or self.redis_cluster_nodes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            config_dir=env.get("GLM_GATEWAY_CONFIG_DIR") or None,
            redis_url=env.get("GLM_GATEWAY_REDIS_URL") or None,
            log_level=env.get("GLM_GATEWAY_LOG_LEVEL") or None,
            database_url=env.get("GLM_GATEWAY_DATABASE_URL") or None,
            redis_sentinels=env.get("GLM_GATEWAY_REDIS_SENTINELS") or None,
            redis_sentinel_service=env.get("GLM_GATEWAY_REDIS_SENTINEL_SERVICE") or None,
            redis_cluster_nodes=env.get("GLM_GATEWAY_REDIS_CLUSTER_NODES") or None,
            redis_username=env.get("GLM_GATEWAY_REDIS_USERNAME") or None,
            redis_password=env.get("GLM_GATEWAY_REDIS_PASSWORD") or None,
            redis_sentinel_password=env.get("GLM_GATEWAY_REDIS_SENTINEL_PASSWORD") or None,
        )
