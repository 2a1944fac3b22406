"""``glm-gateway migrate``, ``keys`` and ``spend`` against a real PostgreSQL (a scratch
database), run as the operator runs them: the CLI in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.postgres import scratch_database
from tests.support.procs import ROOT


@pytest.fixture
def db() -> Iterator[str]:
    with scratch_database() as url:
        yield url


def run(*args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLM_GATEWAY_")}
    if db is not None:
        env["GLM_GATEWAY_DATABASE_URL"] = db
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_migrate_reports_the_schema_version_and_hides_the_password(db: str) -> None:
    with_password = db.replace("postgres@", "postgres:not-a-real-pw@")
    first = run("migrate", "--database-url", with_password)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith("schema version 2")
    assert "not-a-real-pw" not in first.stdout + first.stderr
    assert run("migrate", db=db).stdout == first.stdout  # again: nothing to do


def test_keys_are_managed_in_postgresql_without_a_running_gateway(db: str) -> None:
    made = run("keys", "create", "--name", "team-a", "--budget", "12.5", "--variants",
               "glm-4.6,glm-4.7", db=db)  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert "shown once" in made.stderr and created["key"].startswith("sk-glm-")
    assert created["budget_usd"] == 12.5 and created["spend_usd"] == 0
    assert created["allowed_variants"] == ["glm-4.6", "glm-4.7"] and "hash" not in created
    listed = json.loads(run("keys", "list", db=db).stdout)
    assert [k["id"] for k in listed["data"]] == [created["id"]] and "key" not in listed["data"][0]
    with psycopg.connect(db) as c:
        c.execute(
            "INSERT INTO glm_gateway_spend (entry_id, request_id, key_id, variant, provider,"
            " tokens_in, tokens_cached, tokens_out, cost_micros, at)"
            " VALUES ('e1', 'r1', %s, 'glm-4.6', 'zai', 100, 20, 50, 1500000, now())",
            (created["id"],),
        )
    shown = json.loads(run("keys", "show", created["id"], db=db).stdout)
    assert shown["spend_usd"] == 1.5
    revoked = json.loads(run("keys", "revoke", created["id"], db=db).stdout)
    assert revoked["revoked_at"] is not None
    assert json.loads(run("keys", "show", created["id"], db=db).stdout)["revoked_at"] is not None

    bad = run("keys", "create", "--name", "x", "--variants", "glm-9", db=db)
    assert bad.returncode == 1 and "Unknown variant 'glm-9'" in bad.stderr
    missing = run("keys", "show", "000000000000", db=db)
    assert missing.returncode == 1 and "No virtual key" in missing.stderr


def test_spend_reports_per_key_variant_and_day(db: str) -> None:
    assert run("migrate", db=db).returncode == 0
    day = 86400
    today = time.time() // day * day
    rows = [
        ("e1", "k1", "glm-4.6", 100, 0, 10, 1000, today + 10),
        ("e2", "k1", "glm-4.6", 200, 50, 20, 2000, today + 20),
        ("e3", "k1", "glm-4.7", 300, 0, 30, 3000, today + 30),
        ("e4", "k2", "glm-4.6", 400, 0, 40, 4000, today - day + 5),
    ]
    with psycopg.connect(db) as c:
        for e, k, v, ti, tc, to, cost, at in rows:
            c.execute(
                "INSERT INTO glm_gateway_spend (entry_id, request_id, key_id, variant, provider,"
                " tokens_in, tokens_cached, tokens_out, cost_micros, at)"
                " VALUES (%s, %s, %s, %s, 'zai', %s, %s, %s, %s, to_timestamp(%s))",
                (e, e, k, v, ti, tc, to, cost, at),
            )
    out = json.loads(run("spend", "--json", db=db).stdout)
    d0 = time.strftime("%Y-%m-%d", time.gmtime(today - day))
    d1 = time.strftime("%Y-%m-%d", time.gmtime(today))
    assert out == [
        {"day": d0, "key_id": "k2", "variant": "glm-4.6", "requests": 1, "tokens_in": 400,
         "tokens_cached": 0, "tokens_out": 40, "cost_usd": 0.004},
        {"day": d1, "key_id": "k1", "variant": "glm-4.6", "requests": 2, "tokens_in": 300,
         "tokens_cached": 50, "tokens_out": 30, "cost_usd": 0.003},
        {"day": d1, "key_id": "k1", "variant": "glm-4.7", "requests": 1, "tokens_in": 300,
         "tokens_cached": 0, "tokens_out": 30, "cost_usd": 0.003},
    ]  # fmt: skip
    one = json.loads(run("spend", "--json", "--key", "k1", "--since", d1, db=db).stdout)
    assert [r["variant"] for r in one] == ["glm-4.6", "glm-4.7"]
    table = run("spend", "--key", "k2", db=db).stdout
    assert "k2" in table and "total: $0.004000 over 1 requests" in table
    bad = run("spend", "--since", "last tuesday", db=db)
    assert bad.returncode == 2 and "--since 'last tuesday'" in bad.stderr


def test_spend_and_migrate_without_a_database_say_how_to_set_one() -> None:
    for cmd in ("spend", "migrate"):
        got = run(cmd)
        assert got.returncode == 2 and "GLM_GATEWAY_DATABASE_URL" in got.stderr


def test_postgresql_down_is_one_clear_line() -> None:
    got = run("spend", "--database-url", "postgresql://gw:pw-x@127.0.0.1:1/records")
    assert got.returncode == 2 and "cannot connect to postgresql://gw@127.0.0.1:1/records" in (
        got.stderr
    )
    assert "pw-x" not in got.stderr and "Traceback" not in got.stderr
