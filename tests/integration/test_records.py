"""PostgreSQL records in process, against real servers: migrations, the ledger's batches,
its spill to a file while PostgreSQL is away and its drain after, key records.

The shared server gets a scratch database per test (dropped after); the outage test kills a
server of its own (:class:`tests.support.postgres.OwnPostgres`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.catalogue.schema import KeyLimits
from gateway.records.db import connect, errors, where
from gateway.records.keystore import PgKeys
from gateway.records.ledger import Entry, Ledger
from gateway.records.migrations import LATEST, migrate, version
from gateway.tenancy.keys import KeyRecord, KeySpec, new_key
from tests.support.postgres import OwnPostgres, scratch_database


@pytest.fixture
def db() -> Iterator[str]:
    with scratch_database() as url:
        yield url


def entry(i: int, key: str = "k1", at: float | None = None) -> Entry:
    return Entry(f"e{i}", f"req-{i}", key, "glm-4.6", "zai", 10 + i, i % 3, 5, 7, at or time.time())


def rows(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as c:
        got = c.execute("SELECT entry_id, tokens_in FROM glm_gateway_spend ORDER BY id")
        return [(r[0], r[1]) for r in got.fetchall()]


async def until(check: object, what: str, limit: float = 60) -> None:
    end = time.monotonic() + limit
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


def spooled_lines(where: Path) -> int | None:
    """Rows in the spool files under ``where``; None without any file."""
    files = list(where.glob("glm-gateway-ledger-*"))
    return sum(len(p.read_bytes().splitlines()) for p in files) if files else None


def ledger(url: str, spool: Path, **kw: object) -> Ledger:
    async def conn() -> psycopg.AsyncConnection:  # type: ignore[type-arg]
        c = await connect(url, 2)
        await migrate(c)
        return c

    opts: dict[str, object] = {"batch_size": 50, "flush_interval_s": 0.05, "timeout_s": 3.0}
    opts.update(kw)
    return Ledger(conn, errors(), spool_dir=str(spool), **opts)  # type: ignore[arg-type]


async def test_migrations_run_once_under_concurrent_starts_and_tolerate_a_newer_schema(
    db: str,
) -> None:
    conns = [await connect(db, 2) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(v for a in applied for v in a) == list(range(1, LATEST + 1))
        assert await version(conns[0]) == LATEST
        # a newer release migrated further (a rolling upgrade): this one starts all the same
        await conns[0].execute(
            "INSERT INTO glm_gateway_schema_version (version, name) VALUES (%s, 'future')",
            (LATEST + 1,),
        )
        await conns[0].execute("ALTER TABLE glm_gateway_spend ADD COLUMN future_col text")
        assert await migrate(conns[1]) == []
        assert await version(conns[1]) == LATEST + 1
    finally:
        for c in conns:
            await c.close()


async def test_a_batch_written_twice_keeps_each_row_once(db: str, tmp_path: Path) -> None:
    led = ledger(db, tmp_path)
    led.start()
    batch = [entry(i) for i in range(120)]
    for e in batch + batch[:60]:  # a retried batch: the same entries again
        led.add(e)
    await until(lambda: led.queued == 0 and led.written == 180, "the ledger to write")
    await led.aclose()
    got = rows(db)
    assert sorted(r[0] for r in got) == sorted(e.entry_id for e in batch)
    assert sum(r[1] for r in got) == sum(e.tokens_in for e in batch)


async def test_rows_spill_to_a_file_while_postgres_is_down_and_drain_when_it_is_back(
    tmp_path: Path,
) -> None:
    pg = OwnPostgres()
    try:
        led = ledger(pg.url, tmp_path, max_queued=30)
        led.start()
        led.add(entry(0))
        await until(lambda: led.written == 1, "the first row")
        pg.kill()
        for i in range(1, 101):
            led.add(entry(i))
        await until(lambda: not led.reachable, "the ledger to notice")
        assert led.queued == 30 and led.spooled == 70  # bounded in memory, the rest on disk
        assert spooled_lines(tmp_path) == 70
        pg.start()
        await until(lambda: led.queued == 0 and led.spooled == 0, "the drain", 90)
        await led.aclose()
        got = rows(pg.url)
        assert sorted(r[0] for r in got) == sorted(f"e{i}" for i in range(101))
        assert spooled_lines(tmp_path) is None
    finally:
        pg.close()


async def test_rows_left_at_shutdown_are_spooled_and_a_later_process_writes_them(
    db: str, tmp_path: Path
) -> None:
    dead = tmp_path / "glm-gateway-ledger-999999.jsonl"  # a process that is gone
    dead.write_bytes(b"".join(entry(i).line() for i in range(5)))
    led = ledger("postgresql://postgres@127.0.0.1:1/nowhere", tmp_path)
    led.start()
    for i in range(5, 8):
        led.add(entry(i))
    await led.aclose(timeout_s=0.5)
    assert led.queued == 0 and led.spooled == 8  # the orphan's rows and its own, on disk
    again = ledger(db, tmp_path)
    again.start()
    await until(lambda: again.spooled == 0 and again.written == 8, "the drain")
    await again.aclose()
    assert sorted(r[0] for r in rows(db)) == sorted(f"e{i}" for i in range(8))


async def test_key_records_round_trip_and_changes_are_read_by_seq(db: str) -> None:
    conn = await connect(db, 2)
    try:
        await migrate(conn)
        keys = PgKeys(conn)
        _, a = new_key(KeySpec(name="a", budget_usd=2.5), KeyLimits(), 1000.0)
        _, b = new_key(KeySpec(name="b", allowed_variants=["glm-4.6"]), KeyLimits(), 1001.0)
        await keys.put(a)
        seq, first = await keys.changes(0)
        assert [r.id for r in first] == [a.id]
        await keys.put(b)
        await keys.put(a.revoke(1002.0))
        seq2, later = await keys.changes(seq)
        assert seq2 > seq and [r.id for r in later] == [b.id, a.id]
        assert (await keys.get(a.id)) == a.revoke(1002.0)
        assert [r.id for r in await keys.all()] == [a.id, b.id]
    finally:
        await conn.close()


def test_a_record_from_a_newer_release_loads_without_its_new_fields() -> None:
    _, rec = new_key(KeySpec(name="x"), KeyLimits(), 1.0)
    raw = rec.to_json()[:-1] + b',"field_of_the_future":1}'
    assert KeyRecord.from_json(raw) == rec


def test_the_database_url_is_shown_without_its_password() -> None:
    shown = where("postgresql://gw:s3cret-pw@db.internal:6543/records")
    assert shown == "postgresql://gw@db.internal:6543/records"
    assert "s3cret" not in shown


async def test_connect_failure_names_the_server_but_not_the_password() -> None:
    from gateway.records.db import DatabaseError

    with pytest.raises(DatabaseError) as err:
        await connect("postgresql://gw:s3cret-pw@127.0.0.1:1/records", 1)
    assert "127.0.0.1:1/records" in err.value.message
    assert "s3cret" not in err.value.message and err.value.status == 503


def test_spool_dir_is_the_process_own_file(tmp_path: Path) -> None:
    led = ledger("postgresql://x@127.0.0.1:1/x", tmp_path, max_queued=1)
    led.add(entry(1))
    led.add(entry(2))
    assert led.queued == 1 and led.spooled == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"glm-gateway-ledger-{os.getpid()}.jsonl"]
