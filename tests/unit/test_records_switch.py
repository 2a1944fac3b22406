"""``database.url`` / ``GLM_GATEWAY_DATABASE_URL``: strict config, secrets kept out of logs, and
no PostgreSQL code loaded without a database (the demo). Keys in Redis alone get a WARNING."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.app import build_services
from gateway.catalogue.catalogue import config_secrets
from gateway.catalogue.loader import default_config_dir, load_config
from gateway.cli import resolve_config
from gateway.errors import ConfigError
from tests.support.procs import ROOT

SIM = "http://127.0.0.1:9"


def config_with(tmp_path: Path, extra: str) -> Path:
    cfg = tmp_path / "config"
    shutil.copytree(default_config_dir(), cfg)
    with (cfg / "gateway.yaml").open("a") as f:
        f.write("\n" + extra)
    return cfg


def test_a_database_url_that_is_not_postgresql_is_a_config_error(tmp_path: Path) -> None:
    cfg = config_with(tmp_path, "database:\n  url: mysql://gw:pw@db/x\n")
    with pytest.raises(ConfigError, match=r"gateway\.yaml.*database\.url"):
        load_config(cfg, demo_simulator_url=SIM)


def test_an_unknown_database_setting_is_a_config_error(tmp_path: Path) -> None:
    cfg = config_with(tmp_path, "database:\n  pool_size: 4\n")
    with pytest.raises(ConfigError, match=r"database\.pool_size"):
        load_config(cfg, demo_simulator_url=SIM)


def test_the_environment_names_the_database_and_its_password_is_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GLM_GATEWAY_DATABASE_URL", "postgresql://gw:pg-s3cret@db:5432/records")
    config = resolve_config(None)
    assert config.gateway.database.url == "postgresql://gw:pg-s3cret@db:5432/records"
    assert "pg-s3cret" in config_secrets(config)


def test_keys_in_redis_alone_get_a_warning_at_start(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(default_config_dir(), demo_simulator_url=SIM)
    gw = config.gateway
    state = gw.state.model_copy(update={"backend": "redis", "redis_url": "redis://127.0.0.1:1/0"})
    redis_config = type(config)(
        **{**config.__dict__, "gateway": gw.model_copy(update={"state": state})}
    )
    with caplog.at_level(logging.WARNING, "glm_gateway.records"):
        build_services(redis_config)
    assert any("GLM_GATEWAY_DATABASE_URL" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "glm_gateway.records"):
        build_services(config)  # memory state: one process, nothing to warn about
    assert not caplog.records


PROBE = """
import asyncio, json, sys
import httpx
from gateway.app import create_app
from gateway.cli import resolve_config

app = create_app(resolve_config(None, demo_simulator_url="http://127.0.0.1:9", demo_auth_off=True))

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]},
        )
    return r.status_code

status = asyncio.run(main())
print(json.dumps({
    "status": status,
    "loaded": sorted(m for m in sys.modules if m.startswith(("psycopg", "gateway.records"))),
}))
"""


def probe(env: dict[str, str]) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GLM_GATEWAY_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_without_a_database_no_postgresql_code_is_loaded() -> None:
    assert probe({}) == {"status": 502, "loaded": []}
    on = probe({"GLM_GATEWAY_DATABASE_URL": "postgresql://gw:pw@127.0.0.1:1/records"})
    assert "gateway.records.service" in on["loaded"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("period", "start"),
    [
        ("hour", "2026-03-31 22:00:00"),
        ("day", "2026-03-31 00:00:00"),
        ("week", "2026-03-30 00:00:00"),  # a Monday
        ("month", "2026-03-01 00:00:00"),
    ],
)
def test_a_budget_period_starts_where_the_previous_one_ends(period: str, start: str) -> None:
    import calendar
    import time

    from gateway.tenancy.keys import period_start, period_window

    now = calendar.timegm(time.strptime("2026-03-31 22:59:59", "%Y-%m-%d %H:%M:%S"))
    begin = period_start(period, now)
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(begin)) == start
    assert period_window(period, begin - 1)[1] == begin  # the previous period ends there
    assert period_window(period, begin)[0] == period_window(period, now)[0]


def test_spend_since_takes_a_date_or_a_span() -> None:
    from gateway.cli.records_cmds import parse_since
    from gateway.errors import GatewayError

    assert parse_since("2026-03-01", 0) == 1772323200.0
    assert parse_since("7d", 1000000.0) == 1000000.0 - 7 * 86400
    assert parse_since("12h", 1000000.0) == 1000000.0 - 12 * 3600
    assert parse_since(None, 5.0) is None
    with pytest.raises(GatewayError, match="expected YYYY-MM-DD"):
        parse_since("yesterday", 0)
