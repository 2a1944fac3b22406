"""Virtual API keys: the token format, the stored (hashed) record, budget periods.

A token is ``sk-glm-<id>-<secret>``: ``id`` (12 hex) names the record, ``secret`` is 32 random
bytes. Only ``sha256(token)`` is stored; the token is shown once, when the key is created.
Checking a token looks the record up by ``id`` and compares digests with
:func:`hmac.compare_digest`, so the time taken says nothing about the stored hash. A plain
SHA-256 (not a slow password hash) is enough for 256-bit random secrets.

Records live in PostgreSQL when it is configured (:mod:`gateway.records`), with a copy in the
state backend; otherwise in the state backend alone
(:meth:`gateway.state.base.StateStore.put_key`). This module does no I/O.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gateway.catalogue.schema import BudgetPeriod, Capability, KeyLimits

TOKEN_PREFIX = "sk-glm-"
_TOKEN_RE = re.compile(r"^sk-glm-([0-9a-f]{12})-[A-Za-z0-9_\-]{43}$")
MICROS = 1_000_000
MAX_LIMIT = 10**15
"""Largest rpm / tpm / max_in_flight a key may set: a record must stay JSON (64-bit ints)."""
"""Money is counted in integer micro-USD everywhere in shared state."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key as stored: never the token itself."""

    id: str
    name: str
    hash: str
    """Hex SHA-256 of the whole token."""
    hint: str
    """``sk-glm-<id>-abcd…``: enough to recognise a key in a list, not to use it."""
    created_at: float
    revoked_at: float | None = None
    allowed_variants: tuple[str, ...] | None = None
    allowed_capabilities: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "month"
    downgrade: bool = False
    max_in_flight: int | None = None
    """Requests of this key running at once across replicas; None: no limit."""
    surfaces: tuple[str, ...] | None = None
    """Provider surfaces this key may use, in the order tried (``["coding", "api"]``: a
    Coding Plan first, pay-as-you-go after); None: each provider's ``surface_order``."""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def budget_micros(self) -> int | None:
        return None if self.budget_usd is None else round(self.budget_usd * MICROS)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> KeyRecord:
        data: dict[str, Any] = orjson.loads(raw)
        # a newer release's field (a rolling upgrade): this one does not know it, ignores it
        data = {k: v for k, v in data.items() if k in _FIELDS}
        for name in ("allowed_variants", "allowed_capabilities", "surfaces"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)

    def revoke(self, now: float) -> KeyRecord:
        return self if self.revoked else replace(self, revoked_at=now)

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but the hash."""
        out = asdict(self)
        del out["hash"]
        return out


_FIELDS = frozenset(f.name for f in fields(KeyRecord))


class KeySpec(BaseModel):
    """``POST /admin/keys`` body (and ``glm-gateway keys create`` flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    allowed_variants: list[str] | None = None
    allowed_capabilities: list[Capability] | None = None
    rpm: int | None = Field(default=None, gt=0, le=MAX_LIMIT)
    tpm: int | None = Field(default=None, gt=0, le=MAX_LIMIT)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_period: BudgetPeriod | None = None
    downgrade: bool | None = None
    max_in_flight: int | None = Field(default=None, gt=0, le=MAX_LIMIT)
    surfaces: list[str] | None = Field(default=None, min_length=1)


def new_key(spec: KeySpec, defaults: KeyLimits, now: float) -> tuple[str, KeyRecord]:
    """A fresh token and its record; unset limits come from ``defaults``."""
    key_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
    record = KeyRecord(
        id=key_id,
        name=spec.name,
        hash=token_hash(token),
        hint=token[: len(TOKEN_PREFIX) + 17] + "…",
        created_at=now,
        allowed_variants=tuple(spec.allowed_variants) if spec.allowed_variants else None,
        allowed_capabilities=(
            tuple(spec.allowed_capabilities) if spec.allowed_capabilities is not None else None
        ),
        rpm=spec.rpm if spec.rpm is not None else defaults.rpm,
        tpm=spec.tpm if spec.tpm is not None else defaults.tpm,
        budget_usd=spec.budget_usd if spec.budget_usd is not None else defaults.budget_usd,
        budget_period=spec.budget_period or defaults.budget_period,
        downgrade=spec.downgrade if spec.downgrade is not None else defaults.downgrade,
        max_in_flight=(
            spec.max_in_flight if spec.max_in_flight is not None else defaults.max_in_flight
        ),
        surfaces=tuple(dict.fromkeys(spec.surfaces)) if spec.surfaces else None,
    )
    return token, record


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str | None:
    """The record id a token names, or None when it is not shaped like a virtual key."""
    m = _TOKEN_RE.match(token)
    return m.group(1) if m else None


def token_matches(record: KeyRecord, token: str) -> bool:
    """Constant-time comparison of the token's digest with the stored one."""
    return hmac.compare_digest(token_hash(token).encode(), record.hash.encode())


def period_start(period: str, now: float) -> float:
    """Epoch start of the budget period holding ``now``; -inf for ``total``."""
    if period == "total":
        return -math.inf
    _, end = period_window(period, now)
    t = time.gmtime(now)
    if period == "hour":
        return end - 3600.0
    if period == "day":
        return end - 86400.0
    if period == "week":
        return end - 7 * 86400.0
    return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))


def period_window(period: str, now: float) -> tuple[str, float]:
    """``(period id, end epoch)`` of the budget period holding ``now`` (UTC calendar)."""
    if period == "total":
        return "total", math.inf
    t = time.gmtime(now)
    if period == "hour":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, 0, 0))
        return f"h{start}", start + 3600.0
    day = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    if period == "day":
        return f"d{day}", day + 86400.0
    if period == "week":
        start = day - t.tm_wday * 86400
        return f"w{start}", start + 7 * 86400.0
    month = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    year, mon = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return f"m{month}", float(calendar.timegm((year, mon, 1, 0, 0, 0)))
