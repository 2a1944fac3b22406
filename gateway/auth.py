"""Client authentication: the master key (virtual keys build on this)."""

from __future__ import annotations

import hmac

from gateway.catalogue.schema import AuthConfig
from gateway.errors import AuthenticationFailed

ANONYMOUS = "anonymous"
MASTER = "master"


class Authenticator:
    def __init__(self, cfg: AuthConfig) -> None:
        self._enabled = cfg.enabled
        self._master = cfg.master_key.encode() if cfg.master_key else None

    @property
    def enabled(self) -> bool:
        return self._enabled

    def check(self, authorization: str | None) -> str:
        """The key id of the caller; raises AuthenticationFailed. Never logs the key."""
        if not self._enabled:
            return ANONYMOUS
        key = _bearer(authorization)
        if key is None:
            raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.")
        if self._master is not None and hmac.compare_digest(key.encode(), self._master):
            return MASTER
        raise AuthenticationFailed("Incorrect API key provided.")


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, key = value.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()
