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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            config_dir=env.get("GLM_GATEWAY_CONFIG_DIR") or None,
            redis_url=env.get("GLM_GATEWAY_REDIS_URL") or None,
            log_level=env.get("GLM_GATEWAY_LOG_LEVEL") or None,
            database_url=env.get("GLM_GATEWAY_DATABASE_URL") or None,
        )
