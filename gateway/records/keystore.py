"""Virtual key records in PostgreSQL (``glm_gateway_keys``): the source of truth.

A record is kept whole as JSON (:meth:`KeyRecord.to_json`), with its id, name and revocation
time as columns; every write takes the next ``seq``, so a replica reads only what changed since
its last look (:meth:`PgKeys.changes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from gateway.tenancy.keys import KeyRecord

if TYPE_CHECKING:
    from psycopg import AsyncConnection


class PgKeys:
    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self.conn = conn

    async def put(self, record: KeyRecord) -> None:
        """Create or replace (revocation is a replace)."""
        await self.conn.execute(
            "INSERT INTO glm_gateway_keys (id, name, record, revoked_at)"
            " VALUES (%s, %s, %s::jsonb, %s)"
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, record = EXCLUDED.record,"
            " revoked_at = EXCLUDED.revoked_at, updated_at = now(),"
            " seq = nextval('glm_gateway_keys_seq')",
            (record.id, record.name, record.to_json().decode(), record.revoked_at),
        )

    async def get(self, key_id: str) -> KeyRecord | None:
        cur = await self.conn.execute(
            "SELECT record FROM glm_gateway_keys WHERE id = %s", (key_id,)
        )
        row = await cur.fetchone()
        return _record(row[0]) if row else None

    async def all(self) -> list[KeyRecord]:
        cur = await self.conn.execute(
            "SELECT record FROM glm_gateway_keys ORDER BY (record->>'created_at')::float, id"
        )
        return [_record(row[0]) for row in await cur.fetchall()]

    async def changes(self, since: int) -> tuple[int, list[KeyRecord]]:
        """Records written after ``seq`` ``since``, and the newest seq seen."""
        cur = await self.conn.execute(
            "SELECT seq, record FROM glm_gateway_keys WHERE seq > %s ORDER BY seq", (since,)
        )
        rows = await cur.fetchall()
        if not rows:
            return since, []
        return int(rows[-1][0]), [_record(r[1]) for r in rows]


def _record(raw: Any) -> KeyRecord:
    """psycopg gives jsonb as a dict already; a str from other drivers is parsed."""
    if isinstance(raw, dict):
        return KeyRecord.from_json(orjson.dumps(raw))
    return KeyRecord.from_json(raw)
