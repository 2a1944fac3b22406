"""Client authentication: the master key and virtual keys (:mod:`gateway.tenancy.keys`).

Keys are compared in constant time and never logged, echoed or put in an error message.
Virtual key records come from the state backend through :class:`KeyBook`, this replica's copy:
a key it has not seen costs one lookup, then lives in the copy, which reloads (off the hot path)
whenever the backend's keys version moves. Revocation does not wait for that: the backend checks
it on every request (:meth:`gateway.state.base.StateStore.before`).

With PostgreSQL (:mod:`gateway.records`) the copy is filled from the database (a
:class:`KeySource`) and keeps every key it read even when the state backend loses its own (a
Redis ``FLUSHALL``): such a key is put back by :meth:`KeyBook.recover`.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import Protocol

from gateway.catalogue.schema import AuthConfig
from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.state.base import StateStore
from gateway.tenancy.keys import KeyRecord, key_id_of, token_matches

ANONYMOUS = "anonymous"
MASTER = "master"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: ``anonymous`` (auth off), ``master``, or a virtual key's id."""

    key_id: str
    record: KeyRecord | None = None
    """The virtual key's record; None for the master key and anonymous callers."""


ANONYMOUS_CALLER = Caller(ANONYMOUS)
MASTER_CALLER = Caller(MASTER)


class KeySource(Protocol):
    """Where key records live when the state backend holds only a copy (PostgreSQL)."""

    def refresh(self) -> None:
        """Read changed records soon, off the request path (they arrive through ``put``)."""
        ...

    async def restore(self, key_id: str) -> KeyRecord | None:
        """Put a record the state backend lost back into it; the record, or None."""
        ...

    def reset(self) -> None:
        """The state backend lost its data (its keys version went back): restore every key,
        off the request path."""
        ...


class KeyBook:
    """This replica's copy of the virtual key records."""

    def __init__(self, state: StateStore | None, source: KeySource | None = None) -> None:
        self._state = state
        self.source = source
        self._records: dict[str, KeyRecord] = {}
        self._version: int | None = None
        self._reload: asyncio.Task[None] | None = None

    def cached(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    async def find(self, key_id: str) -> KeyRecord | None:
        record = self._records.get(key_id)
        if record is None and self._state is not None:
            record = await self._state.get_key(key_id)
            if record is not None:
                self._records[key_id] = record
        return record

    def put(self, record: KeyRecord) -> None:
        """A record this replica just wrote (admin API)."""
        self._records[record.id] = record

    def saw_version(self, version: int) -> None:
        """The backend's keys version as of the last request: reload when it moved."""
        if version == self._version or self._state is None:
            return
        first = self._version is None
        went_back = not first and version < (self._version or 0)
        self._version = version
        if first and version == 0:
            return
        if self.source is not None:
            if went_back:
                self.source.reset()
            self.source.refresh()
            return
        if self._reload is None or self._reload.done():
            self._reload = asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> None:
        if self._state is None:
            return
        records = await self._state.list_keys()
        self._records = {r.id: r for r in records}

    async def recover(self, record: KeyRecord) -> bool:
        """The state backend refused ``record`` as revoked: True when it had lost the key (it
        holds no record of it) and the source put it back, or another request just did, so the
        request may ask again; False when the key is revoked there indeed."""
        if self.source is None or self._state is None or record.revoked:
            return False
        held = await self._state.get_key(record.id)
        if held is not None:  # revoked there indeed, or put back meanwhile (ask again)
            return not held.revoked
        fresh = await self.source.restore(record.id)
        if fresh is None:
            return False
        self._records[fresh.id] = fresh
        return not fresh.revoked

    async def aclose(self) -> None:
        if self._reload is not None:
            self._reload.cancel()


class Authenticator:
    def __init__(self, cfg: AuthConfig, keys: KeyBook | None = None) -> None:
        self._enabled = cfg.enabled
        master = cfg.master_key
        self._master = master.encode() if master else None
        self._master_header = (
            b"Bearer " + master.encode() if master and master == master.strip() else None
        )
        """``Authorization`` as clients send the master key, matched whole, with no parse of
        the scheme (any other spelling takes the general path, to the same answer). None for a
        key with outer spaces: the general path strips the token, so it never matches one."""
        self.keys = keys if keys is not None else KeyBook(None)

    @property
    def enabled(self) -> bool:
        return self._enabled

    async def identify(self, authorization: str | None) -> Caller:
        """Who is calling; raises AuthenticationFailed (401) for a missing, wrong or revoked key."""
        caller = self.known(authorization)
        if caller is not None:
            return caller
        key = _require_bearer(authorization)
        key_id = key_id_of(key)
        record = await self.keys.find(key_id) if key_id is not None else None
        return _virtual(record, key)

    def known(self, authorization: str | None) -> Caller | None:
        """:meth:`identify` when it needs no backend lookup (auth off, the master key, a
        virtual key this replica holds), without a coroutine; else None (await identify).
        Raises what identify raises for a key it can judge here."""
        if not self._enabled:
            return ANONYMOUS_CALLER
        master = self._master_header
        if (
            master is not None
            and authorization is not None
            and hmac.compare_digest(authorization.encode("utf-8", "surrogatepass"), master)
        ):
            return MASTER_CALLER
        key = _require_bearer(authorization)
        if self._is_master(key):
            return MASTER_CALLER
        key_id = key_id_of(key)
        if key_id is None:
            return _virtual(None, key)  # (raises)
        record = self.keys.cached(key_id)
        return None if record is None else _virtual(record, key)

    def check(self, authorization: str | None) -> str:
        """Like :meth:`identify` without a backend lookup (keys this replica has seen)."""
        if not self._enabled:
            return ANONYMOUS
        key = _require_bearer(authorization)
        if self._is_master(key):
            return MASTER
        key_id = key_id_of(key)
        return _virtual(self.keys.cached(key_id) if key_id else None, key).key_id

    def require_master(self, authorization: str | None) -> None:
        """Admin endpoints: the master key only (401 wrong key, 403 any other valid key)."""
        if self._master is None:
            raise PermissionDenied(
                "The admin API needs a master key: set auth.master_key (GLM_GATEWAY_MASTER_KEY)."
            )
        key = _require_bearer(authorization)
        if self._is_master(key):
            return
        key_id = key_id_of(key)
        record = self.keys.cached(key_id) if key_id else None
        if record is not None and token_matches(record, key):
            raise PermissionDenied("The admin API takes the master key, not a virtual key.")
        raise AuthenticationFailed("Incorrect API key provided.")

    def _is_master(self, key: str) -> bool:
        return self._master is not None and hmac.compare_digest(key.encode(), self._master)


def _virtual(record: KeyRecord | None, key: str) -> Caller:
    if record is None or not token_matches(record, key):
        raise AuthenticationFailed("Incorrect API key provided.")
    if record.revoked:
        raise AuthenticationFailed(
            f"The API key {record.hint} was revoked. Ask the gateway's operator for a new key."
        )
    return Caller(record.id, record)


def _require_bearer(value: str | None) -> str:
    key = _bearer(value)
    if key is None:
        raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.")
    return key


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, key = value.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()
