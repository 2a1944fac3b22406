"""``glm-gateway spend``'s query: spend per key, variant and UTC day from the ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import AsyncConnection

MICROS = 1_000_000


async def spend_rows(
    conn: AsyncConnection[Any], key_id: str | None, since: float | None
) -> list[dict[str, Any]]:
    """One row per (UTC day, key, variant), oldest day first."""
    where: list[str] = []
    params: list[Any] = []
    if key_id is not None:
        where.append("key_id = %s")
        params.append(key_id)
    if since is not None:
        where.append("at >= to_timestamp(%s)")
        params.append(since)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    cur = await conn.execute(
        "SELECT to_char(date_trunc('day', at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day,"
        " key_id, variant, count(*), sum(tokens_in), sum(tokens_cached), sum(tokens_out),"
        " sum(cost_micros) FROM glm_gateway_spend" + clause + " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        params,
    )
    return [
        {
            "day": r[0],
            "key_id": r[1],
            "variant": r[2],
            "requests": int(r[3]),
            "tokens_in": int(r[4]),
            "tokens_cached": int(r[5]),
            "tokens_out": int(r[6]),
            "cost_usd": int(r[7]) / MICROS,
        }
        for r in await cur.fetchall()
    ]
