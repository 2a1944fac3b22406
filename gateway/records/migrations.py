"""Numbered, additive schema migrations and ``schema_version``.

Each migration only adds (tables, columns with defaults, indexes), so a replica of the
previous release keeps working on a newer schema during a rolling upgrade: it reads the columns
it knows and ignores the rest. Migrations run at start and by ``glm-gateway migrate``, under a
PostgreSQL advisory lock, so replicas starting together apply each one exactly once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger("glm_gateway.records")

LOCK_ID = 0x676C6D6777  # "glmgw": the advisory lock held while migrating

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "virtual keys",
        """
        CREATE SEQUENCE IF NOT EXISTS glm_gateway_keys_seq;
        CREATE TABLE IF NOT EXISTS glm_gateway_keys (
            id         text PRIMARY KEY,
            name       text NOT NULL,
            record     jsonb NOT NULL,
            revoked_at double precision,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            seq        bigint NOT NULL DEFAULT nextval('glm_gateway_keys_seq')
        );
        CREATE INDEX IF NOT EXISTS glm_gateway_keys_seq_idx ON glm_gateway_keys (seq);
        """,
    ),
    (
        2,
        "spend ledger",
        """
        CREATE TABLE IF NOT EXISTS glm_gateway_spend (
            id            bigserial PRIMARY KEY,
            entry_id      text NOT NULL UNIQUE,
            request_id    text NOT NULL,
            key_id        text NOT NULL,
            variant       text NOT NULL,
            provider      text NOT NULL,
            tokens_in     bigint NOT NULL,
            tokens_cached bigint NOT NULL,
            tokens_out    bigint NOT NULL,
            cost_micros   bigint NOT NULL,
            at            timestamptz NOT NULL
        );
        CREATE INDEX IF NOT EXISTS glm_gateway_spend_key_at ON glm_gateway_spend (key_id, at);
        CREATE INDEX IF NOT EXISTS glm_gateway_spend_at ON glm_gateway_spend (at);
        CREATE INDEX IF NOT EXISTS glm_gateway_spend_request ON glm_gateway_spend (request_id);
        """,
    ),
)
LATEST = MIGRATIONS[-1][0]


async def migrate(conn: AsyncConnection[Any]) -> list[int]:
    """Apply every migration the database lacks; the versions applied now (maybe none).

    A database newer than this release (a rolling upgrade in progress) is left as it is."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS glm_gateway_schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM glm_gateway_schema_version")
        have = {int(row[0]) for row in await cur.fetchall()}
        for version, name, sql in MIGRATIONS:
            if version in have:
                continue
            async with conn.transaction():
                await conn.execute(sql.encode())
                await conn.execute(
                    "INSERT INTO glm_gateway_schema_version (version, name) VALUES (%s, %s)",
                    (version, name),
                )
            log.info("database migration %d (%s) applied", version, name)
            applied.append(version)
        newer = sorted(v for v in have if v > LATEST)
        if newer:
            log.info(
                "database schema is at version %d, newer than this release's %d: "
                "keeping it (migrations only add)",
                newer[-1],
                LATEST,
            )
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    return applied


async def version(conn: AsyncConnection[Any]) -> int:
    """The highest applied migration, 0 on an empty database."""
    cur = await conn.execute("SELECT to_regclass('glm_gateway_schema_version') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM glm_gateway_schema_version")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
