"""Connections to PostgreSQL: the only module that imports ``psycopg``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from psycopg import AsyncConnection


class DatabaseError(GatewayError):
    """PostgreSQL could not be reached or refused a statement; the message names no secret.
    On the admin API: 503 (the request path never raises it)."""

    status = 503
    code = "database_unavailable"


def where(url: str) -> str:
    """``postgresql://user@host:port/db`` of a database URL: never the password."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{user}{host}:{parts.port or 5432}{parts.path}"


async def connect(url: str, timeout_s: float) -> AsyncConnection[Any]:
    """An autocommit connection; DatabaseError (with the URL redacted) when it fails."""
    import psycopg

    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=max(1, round(timeout_s))
        )
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to {where(url)}: {_reason(exc)}") from None


def errors() -> tuple[type[BaseException], ...]:
    """What a statement may raise when the server is away (psycopg's errors, OS, timeouts, a
    failed :func:`connect`)."""
    import psycopg

    return (psycopg.Error, OSError, TimeoutError, DatabaseError)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
