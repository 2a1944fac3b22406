"""``glm-gateway migrate``, ``glm-gateway spend`` and ``glm-gateway keys`` on PostgreSQL.

The database is ``--database-url``, else ``$GLM_GATEWAY_DATABASE_URL``, else ``database.url``
of the config directory. ``keys`` goes to PostgreSQL directly when a database is configured
and no ``--url`` names a running gateway; running gateways read the change within
``database.key_sync_s`` (a revocation, too).
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from gateway.catalogue.catalogue import Config
from gateway.errors import GatewayError
from gateway.tenancy.keys import MICROS, KeyRecord, KeySpec, new_key, period_start, period_window

if TYPE_CHECKING:
    from psycopg import AsyncConnection

T = TypeVar("T")
_SINCE = re.compile(r"^(\d+)([hd])$")


def add_records_parsers(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    m = sub.add_parser(
        "migrate",
        help="apply the database schema (PostgreSQL records); serve does it at start too",
        description="Apply every migration the database lacks (numbered, additive: a replica "
        "of the previous release keeps working on the new schema), under an advisory lock. "
        "Prints the schema version.",
    )
    with_config(m)
    database_arg(m)
    m.set_defaults(func=cmd_migrate)

    s = sub.add_parser(
        "spend",
        help="spend per key, variant and UTC day, from the ledger (PostgreSQL records)",
    )
    with_config(s)
    database_arg(s)
    s.add_argument("--key", help="one key id (sk-glm-<id>-...; 'master', 'anonymous')")
    s.add_argument(
        "--since", help="YYYY-MM-DD (UTC), or a span back from now: 7d, 12h (default: all)"
    )
    s.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    s.set_defaults(func=cmd_spend)


def database_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://user:pass@host:port/db (default: $GLM_GATEWAY_DATABASE_URL, else "
        "database.url in the config)",
    )


def database_url(args: argparse.Namespace) -> tuple[str | None, Config]:
    from gateway.cli import resolve_config

    config = resolve_config(getattr(args, "config", None))
    return args.database_url or config.gateway.database.url, config


def _run(url: str, timeout_s: float, call: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
    from gateway.records.db import connect
    from gateway.records.migrations import migrate

    async def go() -> T:
        conn = await connect(url, timeout_s)
        try:
            await migrate(conn)
            return await call(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def cmd_migrate(args: argparse.Namespace) -> int:
    from gateway.records.db import where
    from gateway.records.migrations import version

    url, config = database_url(args)
    if url is None:
        return _no_database("migrate")
    got = _run(url, config.gateway.database.connect_timeout_s, version)
    print(f"{where(url)}: schema version {got}")
    return 0


def parse_since(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    m = _SINCE.match(value)
    if m:
        return now - int(m.group(1)) * (3600 if m.group(2) == "h" else 86400)
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%d")))
    except ValueError:
        raise GatewayError(f"--since {value!r}: expected YYYY-MM-DD, Nd or Nh") from None


def cmd_spend(args: argparse.Namespace) -> int:
    from gateway.records.spend import spend_rows

    url, config = database_url(args)
    if url is None:
        return _no_database("spend")
    since = parse_since(args.since, time.time())
    rows = _run(
        url,
        config.gateway.database.connect_timeout_s,
        lambda c: spend_rows(c, args.key, since),
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ("day", "key", "variant", "requests", "tokens in", "cached", "out", "cost USD")
    table = [head] + [
        (r["day"], r["key_id"], r["variant"], str(r["requests"]), str(r["tokens_in"]),
         str(r["tokens_cached"]), str(r["tokens_out"]), f"{r['cost_usd']:.6f}")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for r in table:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(r, widths, strict=True))))  # fmt: skip
    total = sum(r["cost_usd"] for r in rows)
    print(f"total: ${total:.6f} over {sum(r['requests'] for r in rows)} requests")
    return 0


def _no_database(cmd: str) -> int:
    print(
        f"glm-gateway {cmd}: no database: set GLM_GATEWAY_DATABASE_URL, database.url in "
        "gateway.yaml, or --database-url",
        file=sys.stderr,
    )
    return 2


# --- keys on PostgreSQL --------------------------------------------------------------------------


def keys_in_database(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any] | None:
    """``glm-gateway keys`` against PostgreSQL; None when no database is configured."""
    url, config = database_url(args)
    if url is None:
        return None
    from gateway.records.keystore import PgKeys

    cmd = args.keys_command
    now = time.time()

    async def run(conn: AsyncConnection[Any]) -> dict[str, Any]:
        keys = PgKeys(conn)
        if cmd == "create":
            token, record = new_key(_spec(spec, config), config.gateway.auth.key_defaults, now)
            await keys.put(record)
            out = await _describe(conn, record, now)
            out["key"] = token
            out["note"] = "Store this key now: the gateway keeps only its hash, never the key."
            return out
        if cmd == "list":
            return {
                "object": "list",
                "data": [await _describe(conn, r, now) for r in await keys.all()],
            }
        found = await keys.get(args.key_id)
        if found is None:
            raise GatewayError(f"No virtual key with id {args.key_id!r}.")
        if cmd == "revoke":
            found = found.revoke(now)
            await keys.put(found)
        return await _describe(conn, found, now)

    return _run(url, config.gateway.database.connect_timeout_s, run)


def _spec(raw: dict[str, Any], config: Config) -> KeySpec:
    try:
        spec = KeySpec.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise GatewayError(f"Invalid key spec: {detail}.") from None
    variants = config.catalogue.variants
    unknown = [v for v in spec.allowed_variants or () if v not in variants]
    if unknown:
        raise GatewayError(f"Unknown variant {unknown[0]!r}; known: {', '.join(variants)}.")
    return spec


async def _describe(conn: AsyncConnection[Any], record: KeyRecord, now: float) -> dict[str, Any]:
    """As the admin API shows a key; spend this period from the ledger."""
    _, end = period_window(record.budget_period, now)
    since = period_start(record.budget_period, now)
    cur = await conn.execute(
        "SELECT coalesce(sum(cost_micros), 0) FROM glm_gateway_spend"
        " WHERE key_id = %s AND at >= to_timestamp(%s)",
        (record.id, since if since != float("-inf") else 0.0),
    )
    row = await cur.fetchone()
    out = record.public()
    out["spend_usd"] = (int(row[0]) if row else 0) / MICROS
    out["period_ends_at"] = None if end == float("inf") else end
    return out
