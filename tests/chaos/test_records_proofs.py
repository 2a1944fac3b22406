"""Records that must not be lost (issue 18), proved on real servers on loopback: gateway
replicas (``glm-gateway serve``) sharing a ``redis-server`` and a PostgreSQL, clients through
the openai SDK, the provider simulator upstream.

- keys and budgets survive ``FLUSHALL`` and a Redis restart without persistence;
- the ledger's spend equals the sum of ``usage`` over a load run across two replicas (streams
  among them), to the token;
- PostgreSQL killed mid-run (and Redis flushed meanwhile) and restarted: every request
  answered, no ledger row lost, none doubled.

Waits poll for a state with a generous bound; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import psycopg
import pytest

from tests.support.e2e import AUTH, sdk_client
from tests.support.postgres import OwnPostgres, scratch_database
from tests.support.procs import Proc
from tests.support.redis_server import RedisServer
from tests.support.topology import redis_replicas

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

PRICED = {"X-GLM-Providers": "zai", "X-GLM-Fallback": "none"}
"""Model glm-4-32b on zai's deployment only: $0.10 per 1M tokens in and out."""
PRICE = 0.10
DB_PASSWORD = "pg-SECRET-never-logged"


def replicas(sim: Proc, redis: RedisServer, db: str, tmp: Path, n: int = 2) -> list[Proc]:
    database = {"url": db, "key_sync_s": 0.5, "flush_interval_s": 0.1, "spool_dir": str(tmp)}
    return redis_replicas(sim, redis.url, tmp, n=n, timeout_ms=2000, database=database)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


async def admin(gw: Proc, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, gw.url + path, json=body, headers=AUTH) as r,
    ):
        assert r.status in (200, 201), await r.text()
        return await r.json()


async def ask(gw: Proc, key: str, text: str, rid: str | None = None) -> Any:
    async with sdk_client(gw, key) as c:
        return await c.chat.completions.create(
            model="glm-4-32b",
            messages=[{"role": "user", "content": text}],
            max_tokens=16,
            extra_headers={**PRICED, **({"x-request-id": rid} if rid else {})},
        )


async def stream_usage(gw: Proc, key: str, text: str) -> Any:
    async with sdk_client(gw, key) as c:
        stream = await c.chat.completions.create(
            model="glm-4-32b",
            messages=[{"role": "user", "content": text}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=PRICED,
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
    assert usage is not None
    return usage


def cli(*argv: str) -> str:
    """A command's stdout (it must succeed)."""
    return subprocess.run(argv, capture_output=True, check=True, text=True).stdout.strip()


def charge(usage: Any) -> int:
    return math.ceil(usage.prompt_tokens * PRICE + usage.completion_tokens * PRICE)


def ledger(db: str, where: str = "TRUE", args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(db) as c:
        return c.execute(
            "SELECT request_id, key_id, tokens_in, tokens_cached, tokens_out, cost_micros"
            f" FROM glm_gateway_spend WHERE {where}",
            args,
        ).fetchall()


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60) -> None:
    end = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.1)


async def test_keys_and_budgets_survive_flushall_and_a_redis_restart(
    simulator: Proc, redis: RedisServer, tmp_path: Path
) -> None:
    with scratch_database() as db:
        a, b = procs = replicas(simulator, redis, db, tmp_path)
        try:
            live = await admin(a, "POST", "/admin/keys", {"name": "live", "budget_usd": 5})
            dead = await admin(a, "POST", "/admin/keys", {"name": "dead"})
            await admin(a, "DELETE", f"/admin/keys/{dead['id']}")
            tight = await admin(a, "POST", "/admin/keys", {"name": "tight", "budget_usd": 1e-5})
            charged = 0
            for i in range(6):
                charged += charge((await ask(procs[i % 2], live["key"], f"before {i}")).usage)
            for i in range(20):  # spend the tight key's budget
                try:
                    await ask(procs[i % 2], tight["key"], f"tight {i}")
                except openai.RateLimitError as exc:
                    assert "budget is spent" in str(exc)
                    break
            else:
                raise AssertionError("the tight budget never ran out")

            async def written(n: int) -> bool:
                return len(ledger(db, "key_id = %s", (live["id"],))) == n

            await until(lambda: written(6), "six ledger rows")
            seen: list[int] = []

            async def spend_is(micros: int) -> bool:
                shown = await admin(procs[len(seen) % 2], "GET", f"/admin/keys/{live['id']}")
                seen.append(round(shown["spend_usd"] * 1e6))
                return seen[-1] == micros

            shown = await admin(b, "GET", f"/admin/keys/{live['id']}")
            assert round(shown["spend_usd"] * 1e6) == charged

            assert (
                await asyncio.to_thread(cli, "redis-cli", "-p", str(redis.port), "FLUSHALL") == "OK"
            )
            for i, gw in enumerate(procs):  # the first request on each replica finds it gone
                charged += charge((await ask(gw, live["key"], f"after flush {i}")).usage)
                with pytest.raises(openai.AuthenticationError, match="revoked"):
                    await ask(gw, dead["key"], "still revoked?")
            shown = await admin(a, "GET", f"/admin/keys/{live['id']}")
            assert shown["budget_usd"] == 5
            await until(lambda: spend_is(charged), "the spend to be back after FLUSHALL")

            async def tight_spent() -> bool:
                shown = await admin(a, "GET", f"/admin/keys/{tight['id']}")
                return bool(shown["spend_usd"] > 0)

            await until(tight_spent, "the tight key's spend to be back")
            for gw in procs:  # its budget is still spent
                with pytest.raises(openai.RateLimitError, match="budget is spent"):
                    await ask(gw, tight["key"], "over budget?")

            redis.stop()  # no persistence: it comes back empty
            redis.start()
            for i in range(4):  # served throughout: from local state until Redis is back
                charged += charge((await ask(procs[i % 2], live["key"], f"restart {i}")).usage)

            await until(lambda: spend_is(charged), "the spend to be back after the restart")
            await asyncio.sleep(4)  # past the restore: nothing is added twice
            assert await spend_is(charged), seen[-1]
            for gw in procs:
                await ask(gw, live["key"], "after restart")
                with pytest.raises(openai.AuthenticationError):
                    await ask(gw, dead["key"], "still revoked?")
        finally:
            for p in procs:
                p.stop()


async def test_ledger_spend_equals_the_sum_of_usage_across_two_replicas(
    simulator: Proc, redis: RedisServer, tmp_path: Path
) -> None:
    with scratch_database() as db:
        procs = replicas(simulator, redis, db, tmp_path)
        try:
            keys = [await admin(procs[0], "POST", "/admin/keys", {"name": f"k{i}"}) for i in (0, 1)]
            sem = asyncio.Semaphore(16)

            async def one(i: int) -> tuple[str, Any]:
                key, gw, text = keys[i % 2], procs[(i // 2) % 2], f"load {i} {uuid.uuid4()}"
                async with sem:
                    if i % 4 == 3:  # a stream: its usage comes in the last chunk
                        return key["id"], await stream_usage(gw, key["key"], text)
                    done = await ask(gw, key["key"], text)
                return key["id"], done.usage

            answers = await asyncio.gather(*(one(i) for i in range(200)))

            async def all_written() -> bool:
                return len(ledger(db)) == len(answers)

            await until(all_written, "every answer in the ledger")
            for key in keys:
                used = [u for kid, u in answers if kid == key["id"]]
                rows = ledger(db, "key_id = %s", (key["id"],))
                assert len(rows) == len(used) == 100
                assert sum(r[2] for r in rows) == sum(u.prompt_tokens for u in used)
                assert sum(r[4] for r in rows) == sum(u.completion_tokens for u in used)
                cached = sum(
                    (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0
                    for u in used
                )
                assert sum(r[3] for r in rows) == cached
            report = await asyncio.to_thread(
                cli, sys.executable, "-m", "gateway.cli", "spend", "--json", "--database-url", db,
                "--key", keys[0]["id"],
            )  # fmt: skip
            days = json.loads(report)
            used = [u for kid, u in answers if kid == keys[0]["id"]]
            assert sum(d["requests"] for d in days) == 100
            assert sum(d["tokens_in"] for d in days) == sum(u.prompt_tokens for u in used)
            assert {d["variant"] for d in days} == {"glm-4-32b"}
        finally:
            for p in procs:
                p.stop()


async def test_postgres_killed_mid_run_loses_and_doubles_no_ledger_row(
    simulator: Proc, redis: RedisServer, tmp_path: Path
) -> None:
    pg = OwnPostgres()
    try:
        # trust auth ignores the password: it is there to be kept out of logs and /readyz
        url = pg.url.replace("postgres@", f"postgres:{DB_PASSWORD}@")
        procs = replicas(simulator, redis, url, tmp_path)
        try:
            key = await admin(procs[0], "POST", "/admin/keys", {"name": "outage"})
            sent: list[str] = []
            failures: list[BaseException] = []

            async def load(n: int, tag: str) -> None:
                async def one(i: int) -> None:
                    rid = f"{tag}-{i}-{uuid.uuid4().hex[:8]}"
                    sent.append(rid)
                    try:
                        await ask(procs[i % 2], key["key"], f"{tag} {i}", rid)
                    except Exception as exc:
                        failures.append(exc)

                await asyncio.gather(*(one(i) for i in range(n)))

            await load(40, "before")
            pg.kill()

            async def degraded() -> bool:
                async with aiohttp.ClientSession() as http:
                    for gw in procs:
                        async with http.get(gw.url + "/readyz") as r:
                            body = await r.json()
                        if body["records"]["reachable"]:
                            return False
                    return True

            await load(60, "during")
            await until(degraded, "both replicas to see PostgreSQL gone")
            # Redis loses the key too: each replica puts back its own copy (PostgreSQL is down)
            flushed = await asyncio.to_thread(cli, "redis-cli", "-p", str(redis.port), "FLUSHALL")
            assert flushed == "OK"
            await load(60, "during2")
            async with aiohttp.ClientSession() as http, http.get(procs[0].url + "/readyz") as r:
                ready = await r.json()
            assert r.status == 200 and ready["status"] == "degraded"
            assert DB_PASSWORD not in json.dumps(ready)
            assert ready["records"]["database"] == pg.url
            pg.start()
            await load(40, "after")
            assert not failures, failures[:3]

            async def drained() -> bool:
                try:
                    return len(ledger(pg.url)) >= len(sent)
                except psycopg.Error:
                    return False

            await until(drained, "the queued rows to be written", 120)
            rows = ledger(pg.url)
            assert sorted(r[0] for r in rows) == sorted(sent)  # each once: none lost or doubled
        finally:
            for p in procs:
                p.stop()
        for p in procs:
            assert DB_PASSWORD not in p.log_text()
    finally:
        pg.close()
