"""Virtual keys: token format and hashing, periods, authentication, permissions, refusals, and
the admin API plus the hot path in one process (memory backend) against the real simulator."""

from __future__ import annotations

import calendar
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.schema import AuthConfig, BreakerConfig, KeyLimits
from gateway.errors import AuthenticationFailed, PermissionDenied, RateLimited
from gateway.state.base import KeyVerdict
from gateway.state.memory import MemoryState
from gateway.tenancy import keys as keymod
from gateway.tenancy.auth import ANONYMOUS, MASTER, Authenticator, KeyBook
from gateway.tenancy.keys import (
    KeySpec,
    key_id_of,
    new_key,
    period_window,
    token_hash,
    token_matches,
)
from gateway.tenancy.limits import restrict
from gateway.tenancy.refusals import go_duration, refusal
from tests.support.procs import CONFIG, Proc

MK = "sk-unit-master"
T = calendar.timegm((2030, 3, 13, 15, 30, 0))  # a Wednesday


def _new(**spec: Any) -> tuple[str, keymod.KeyRecord]:
    return new_key(KeySpec(name="t", **spec), KeyLimits(), T)


# --- tokens and records ----------------------------------------------------------------------


def test_a_token_names_its_record_and_only_its_hash_is_stored() -> None:
    token, record = _new()
    assert token.startswith("sk-glm-") and key_id_of(token) == record.id
    assert record.hash == token_hash(token) and token not in record.to_json().decode()
    assert token[-10:] not in record.hint and record.hint.startswith(token[:24])
    assert keymod.KeyRecord.from_json(record.to_json()) == record
    assert "hash" not in record.public()


def test_malformed_tokens_name_no_record() -> None:
    token, _ = _new()
    for bad in ("", "sk-glm-", token[:-1], token + "x", "Bearer " + token, token.upper()):
        assert key_id_of(bad) is None


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    token, record = _new()
    seen: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return a == b

    monkeypatch.setattr(keymod.hmac, "compare_digest", spy)
    # 32 random bytes in base64 end in "A" one time in 16: the wrong token must differ
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert token_matches(record, token) and not token_matches(record, wrong)
    assert len(seen) == 2


def test_unset_limits_come_from_the_defaults() -> None:
    defaults = KeyLimits(rpm=60, tpm=1000, budget_usd=5, budget_period="week", downgrade=True)
    _, record = new_key(KeySpec(name="d", rpm=7), defaults, T)
    assert (record.rpm, record.tpm, record.budget_usd) == (7, 1000, 5)
    assert (record.budget_period, record.downgrade, record.budget_micros) == ("week", True, 5e6)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("hour", (2030, 3, 13, 15), (2030, 3, 13, 16)),
        ("day", (2030, 3, 13, 0), (2030, 3, 14, 0)),
        ("week", (2030, 3, 11, 0), (2030, 3, 18, 0)),
        ("month", (2030, 3, 1, 0), (2030, 4, 1, 0)),
    ],
)
def test_budget_periods_are_utc_calendar_periods(
    period: str, start: tuple[int, ...], end: tuple[int, ...]
) -> None:
    pid, ends = period_window(period, T)
    assert pid.endswith(str(calendar.timegm((*start, 0, 0))))
    assert ends == calendar.timegm((*end, 0, 0))
    assert period_window("total", T) == ("total", float("inf"))
    assert period_window("month", calendar.timegm((2030, 12, 31, 23, 0, 0)))[1] == (
        calendar.timegm((2031, 1, 1, 0, 0, 0))
    )


# --- authentication ----------------------------------------------------------------------------


async def _auth(*records: keymod.KeyRecord, enabled: bool = True) -> Authenticator:
    state = MemoryState(BreakerConfig())
    for r in records:
        await state.put_key(r)
    return Authenticator(AuthConfig(enabled=enabled, master_key=MK), KeyBook(state))


async def test_callers_are_identified_by_their_key() -> None:
    token, record = _new()
    auth = await _auth(record)
    assert (await auth.identify(f"Bearer {MK}")).key_id == MASTER
    caller = await auth.identify(f"Bearer {token}")
    assert caller.key_id == record.id and caller.record == record
    assert auth.check(f"Bearer {token}") == record.id
    off = await _auth(enabled=False)
    assert (await off.identify(None)).key_id == ANONYMOUS


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer wrong"])
async def test_missing_or_wrong_keys_are_401(header: str | None) -> None:
    auth = await _auth()
    with pytest.raises(AuthenticationFailed):
        await auth.identify(header)


async def test_a_token_with_a_known_id_but_another_secret_is_401() -> None:
    token, record = _new()
    auth = await _auth(record)
    forged = token[:-5] + ("AAAAA" if not token.endswith("AAAAA") else "BBBBB")
    with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
        await auth.identify(f"Bearer {forged}")


async def test_a_revoked_key_is_401_and_says_so() -> None:
    token, record = _new()
    auth = await _auth(record.revoke(T + 1))
    with pytest.raises(AuthenticationFailed, match="revoked") as ei:
        await auth.identify(f"Bearer {token}")
    assert token not in ei.value.message


async def test_the_admin_api_takes_only_the_master_key() -> None:
    token, record = _new()
    auth = await _auth(record)
    await auth.identify(f"Bearer {token}")  # now cached
    auth.require_master(f"Bearer {MK}")
    with pytest.raises(PermissionDenied):
        auth.require_master(f"Bearer {token}")
    with pytest.raises(AuthenticationFailed):
        auth.require_master("Bearer nope")
    nomaster = Authenticator(AuthConfig(master_key=None))
    with pytest.raises(PermissionDenied, match="master_key"):
        nomaster.require_master(f"Bearer {MK}")


# --- permissions and refusals ------------------------------------------------------------------


def _needs(model: str, **body: Any) -> Any:
    config = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")
    msgs = [{"role": "user", "content": "hi"}]
    return resolve_needs({"model": model, "messages": msgs, **body}, {}, config)


def test_a_key_narrows_auto_to_its_variants() -> None:
    _, record = _new(allowed_variants=["glm-4.7", "glm-4.6"])
    needs = _needs("auto")
    restrict(needs, record)
    assert needs.allowed_variants == {"glm-4.7", "glm-4.6"}


def test_a_disallowed_variant_or_capability_is_403() -> None:
    _, record = _new(allowed_variants=["glm-4.7"], allowed_capabilities=["function_calling"])
    with pytest.raises(PermissionDenied, match=r"may not use model 'glm-4\.6'") as ei:
        restrict(_needs("glm-4.6"), record)
    assert ei.value.code == "model_not_allowed"
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]
    with pytest.raises(PermissionDenied, match="vision") as ei:
        restrict(_needs("auto", messages=[{"role": "user", "content": image}]), record)
    assert ei.value.code == "capability_not_allowed"


def test_refusals_carry_retry_after_and_openai_ratelimit_headers() -> None:
    rpm = refusal(KeyVerdict("rpm", 12.2, rpm_limit=10, rpm_reset_s=59.5), 100)
    assert isinstance(rpm, RateLimited) and rpm.status == 429
    assert rpm.headers["Retry-After"] == "13"
    assert rpm.headers["x-ratelimit-limit-requests"] == "10"
    assert rpm.headers["x-ratelimit-remaining-requests"] == "0"
    assert rpm.headers["x-ratelimit-reset-requests"] == "1m0s"
    big = refusal(KeyVerdict("tpm", -1, tpm_limit=1000), 5000)
    assert "5000 tokens" in big.message and big.headers["Retry-After"] == "60"
    broke = refusal(KeyVerdict("budget", 3600, budget_micros=2_000_000, spend_micros=2_000_100), 1)
    assert broke.type == "insufficient_quota" and broke.code == "insufficient_quota"
    assert "$2.0001 of $2.00" in broke.message and broke.headers["Retry-After"] == "3600"
    forever = refusal(KeyVerdict("budget", -1, budget_micros=1), 1)
    assert "does not renew" in forever.message and "Retry-After" not in forever.headers


def test_reset_durations_look_like_openai_ones() -> None:
    assert [go_duration(s) for s in (0, 0.25, 1, 59.2, 60, 360, 3725)] == [
        "0s",
        "250ms",
        "1s",
        "1m0s",
        "1m0s",
        "6m0s",
        "1h2m5s",
    ]


# --- one process, memory backend, real simulator --------------------------------------------


@pytest.fixture
async def gw(simulator: Proc) -> AsyncIterator[httpx.AsyncClient]:
    config = load_config(CONFIG, demo_simulator_url=simulator.url)
    auth = AuthConfig(enabled=True, master_key=MK)
    config = dataclasses.replace(config, gateway=config.gateway.model_copy(update={"auth": auth}))
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as c:
        yield c
    for p in app.services.providers.values():
        await p.aclose()


async def _create(gw: httpx.AsyncClient, **spec: Any) -> dict[str, Any]:
    r = await gw.post(
        "/admin/keys", json={"name": "k", **spec}, headers={"Authorization": f"Bearer {MK}"}
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def _chat(
    gw: httpx.AsyncClient, key: str, model: str = "auto", **hdrs: str
) -> httpx.Response:
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    return await gw.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}", **hdrs}
    )


async def test_a_created_key_works_at_once_and_is_shown_only_then(gw: httpx.AsyncClient) -> None:
    created = await _create(gw)
    assert (await _chat(gw, created["key"])).status_code == 200
    listed = (await gw.get("/admin/keys", headers={"Authorization": f"Bearer {MK}"})).json()
    assert created["key"] not in str(listed) and listed["data"][0]["id"] == created["id"]
    assert (
        await gw.get("/admin/keys", headers={"Authorization": f"Bearer {created['key']}"})
    ).status_code == 403


async def test_wrong_and_revoked_keys_are_401(gw: httpx.AsyncClient) -> None:
    created = await _create(gw)
    assert (await _chat(gw, "sk-glm-000000000000-" + "A" * 43)).status_code == 401
    r = await gw.delete(f"/admin/keys/{created['id']}", headers={"Authorization": f"Bearer {MK}"})
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    gone = await _chat(gw, created["key"])
    assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]


async def test_a_disallowed_variant_is_403(gw: httpx.AsyncClient) -> None:
    created = await _create(gw, allowed_variants=["glm-4.7-flash"])
    r = await _chat(gw, created["key"], model="glm-4.6")
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    ok = await _chat(gw, created["key"])
    assert ok.status_code == 200 and ok.headers["x-glm-variant"] == "glm-4.7-flash"


async def test_over_budget_is_429_or_a_cheaper_variant(gw: httpx.AsyncClient) -> None:
    priced = {"X-GLM-Providers": "zai", "X-GLM-Fallback": "none"}
    broke = await _create(gw, budget_usd=0)
    r = await _chat(gw, broke["key"], model="glm-4-32b", **priced)
    assert r.status_code == 429 and r.json()["error"]["type"] == "insufficient_quota"
    assert int(r.headers["retry-after"]) >= 1
    thrifty = await _create(gw, budget_usd=0, downgrade=True)
    down = await _chat(gw, thrifty["key"], model="glm-4.7")
    assert down.status_code == 200, down.text
    assert down.headers["x-glm-budget-downgrade"].startswith("glm-4.7->")
    assert down.headers["x-glm-variant"] != "glm-4.7"


async def test_keys_never_reach_the_logs(
    gw: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await _create(gw, rpm=1)
    token = created["key"]
    await _chat(gw, token)
    await _chat(gw, token)  # 429
    await _chat(gw, token[:-3] + "xyz")  # 401
    assert caplog.records and token not in caplog.text and token[-43:-3] not in caplog.text
