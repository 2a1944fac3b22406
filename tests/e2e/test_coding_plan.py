"""The Coding Plan surface end to end: the simulator's plan window runs out, traffic moves to
pay-as-you-go and comes back after the stated reset; 1113 on the general surface moves on
without closing the plan; a key limited to one surface; the plan quota read on a schedule.

One simulator and gateways of their own on a copy of the packaged config whose Z.ai provider
has a ``coding`` surface (plan first) serving glm-4.7.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.e2e import (
    GATEWAY_ENV,
    MASTER_KEY,
    gateway_yaml,
    module_gateway,
    nonce,
    sim_requests,
)
from tests.support.procs import CONFIG, Proc, config_copy, start_gateway, start_simulator
from tests.support.redis_server import RedisServer

WINDOW_S = 3
"""The simulated plan window: short, so the reset comes within the test."""


def providers_yaml(quota: bool) -> str:
    data = yaml.safe_load((CONFIG / "providers.yaml").read_text())
    coding: dict[str, Any] = {
        "base_url": "https://api.z.ai/api/coding/paas/v4",
        "anthropic_base_url": "https://api.z.ai/api/anthropic",  # the simulator: /zai/coding/
        "variants": ["glm-4.7"],
    }
    if quota:
        coding["quota"] = {"url": "https://api.z.ai/api/monitor/usage/quota/limit", "interval_s": 1}
    data["providers"]["zai"]["surfaces"] = {"coding": coding}
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def sim() -> Iterator[Proc]:
    proc = start_simulator(CONFIG)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def gateway(sim: Proc, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Proc]:
    """A gateway of its own; with ``@pytest.mark.parametrize("gateway", [True], indirect=True)``
    it reads the plan's quota every second (else never: the window decides alone)."""
    quota = bool(getattr(request, "param", False))
    httpx.delete(sim.url + "/_sim/plans", timeout=10).raise_for_status()
    with module_gateway(sim, tmp_path, providers_yaml=providers_yaml(quota)) as gw:
        yield gw
    httpx.delete(sim.url + "/_sim/plans", timeout=10).raise_for_status()


def set_plan(sim: Proc, **zai: Any) -> None:
    r = httpx.post(sim.url + "/_sim/plans", json={"zai": zai}, timeout=10)
    r.raise_for_status()


def ask(gw: Proc, tag: str, providers: str = "zai", key: str = MASTER_KEY) -> httpx.Response:
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "glm-4.7", "messages": [{"role": "user", "content": f"hi {tag}"}]},
        headers={"Authorization": f"Bearer {key}", "X-GLM-Providers": providers},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def ask_messages(gw: Proc, tag: str) -> httpx.Response:
    """A Messages request (Claude Code's API), answered by Z.ai's own Anthropic endpoint."""
    r = httpx.post(
        gw.url + "/v1/messages",
        json={
            "model": "glm-4.7",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"hi {tag}"}],
        },
        headers={"Authorization": f"Bearer {MASTER_KEY}", "X-GLM-Providers": "zai"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def surfaces_hit(sim: Proc, tag: str) -> list[str]:
    """Which surface (coding, general) each upstream chat request of ``tag`` went to, in order."""
    return [
        f"{q['provider']}:{'coding' if '/coding/' in q['path'] else 'general'}"
        for q in sim_requests(sim, tag)
    ]


def wait_past(deadline_epoch: float) -> None:
    """Sleep until the simulator's stated reset second has passed (bounded by the window)."""
    wait = deadline_epoch - time.time()
    assert wait <= WINDOW_S + 2
    if wait > 0:
        time.sleep(wait)


def test_plan_window_moves_traffic_to_pay_as_you_go_and_back(sim: Proc, gateway: Proc) -> None:
    set_plan(sim, requests=2, window_s=WINDOW_S)
    tag = nonce()
    started = time.time()
    for i in range(2):
        ask(gateway, f"{tag}-{i}")
    assert surfaces_hit(sim, tag) == ["zai:coding", "zai:coding"]

    spent = ask(gateway, f"{tag}-spent")
    assert surfaces_hit(sim, f"{tag}-spent") == ["zai:coding", "zai:general"]
    assert spent.headers["x-glm-attempts"] == "2"
    assert "zai:coding/glm-4.7 quota 429 code=1308" in spent.headers["x-glm-fallback-reason"]

    ask(gateway, f"{tag}-open")  # the plan's circuit is open until the stated reset
    assert surfaces_hit(sim, f"{tag}-open") == ["zai:general"]

    wait_past(int(started) + WINDOW_S + 2)
    ask(gateway, f"{tag}-back")
    assert surfaces_hit(sim, f"{tag}-back") == ["zai:coding"]


def test_the_anthropic_style_plan_surface_runs_out_and_comes_back(sim: Proc, gateway: Proc) -> None:
    set_plan(sim, requests=2, window_s=WINDOW_S)
    tag = nonce()
    started = time.time()
    for i in range(2):
        ask_messages(gateway, f"{tag}-{i}")
    assert surfaces_hit(sim, tag) == ["zai:coding", "zai:coding"]
    assert {q["api"] for q in sim_requests(sim, tag)} == {"messages"}  # passed through natively

    # Z.ai's Anthropic endpoint says 1308 in Anthropic's shape: the same quota, the same reset
    spent = ask_messages(gateway, f"{tag}-spent")
    assert surfaces_hit(sim, f"{tag}-spent") == ["zai:coding", "zai:general"]
    assert "zai:coding/glm-4.7 quota 429 code=1308" in spent.headers["x-glm-fallback-reason"]
    assert spent.json()["type"] == "message"

    ask_messages(gateway, f"{tag}-open")
    assert surfaces_hit(sim, f"{tag}-open") == ["zai:general"]
    wait_past(int(started) + WINDOW_S + 2)
    ask_messages(gateway, f"{tag}-back")
    assert surfaces_hit(sim, f"{tag}-back") == ["zai:coding"]


def test_1113_on_the_general_surface_keeps_the_plan(sim: Proc, gateway: Proc) -> None:
    set_plan(sim, requests=1, window_s=WINDOW_S, general_balance=False)
    tag = nonce()
    started = time.time()
    ask(gateway, f"{tag}-a", "zai,bigmodel")
    assert surfaces_hit(sim, f"{tag}-a") == ["zai:coding"]

    moved = ask(gateway, f"{tag}-b", "zai,bigmodel")
    assert surfaces_hit(sim, f"{tag}-b") == ["zai:coding", "zai:general", "bigmodel:general"]
    assert "zai/glm-4.7 auth 429 code=1113" in moved.headers["x-glm-fallback-reason"]

    wait_past(int(started) + WINDOW_S + 2)
    ask(gateway, f"{tag}-c", "zai,bigmodel")  # 1113 marked the general surface, not the plan
    assert surfaces_hit(sim, f"{tag}-c") == ["zai:coding"]


def test_a_key_limited_to_pay_as_you_go(sim: Proc, gateway: Proc) -> None:
    set_plan(sim, requests=100, window_s=60)
    made = httpx.post(
        gateway.url + "/admin/keys",
        json={"name": "paygo", "surfaces": ["api"]},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=10,
    )
    assert made.status_code in (200, 201), made.text
    assert made.json()["surfaces"] == ["api"]
    tag = nonce()
    ask(gateway, tag, key=made.json()["key"])
    assert surfaces_hit(sim, tag) == ["zai:general"]
    bad = httpx.post(
        gateway.url + "/admin/keys",
        json={"name": "x", "surfaces": ["plan"]},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=10,
    )
    assert bad.status_code == 400 and "Unknown surface 'plan'" in bad.text


def wait_for(what: str, check: Any, within_s: float = 15.0) -> Any:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {within_s}s: {what}")


def dashboard(gw: Proc) -> dict[str, Any]:
    r = httpx.get(
        gw.url + "/dashboard/data", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10
    )
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


@pytest.mark.parametrize("gateway", [True], indirect=True)
def test_plan_quota_read_on_a_schedule(sim: Proc, gateway: Proc) -> None:
    set_plan(sim, requests=4, window_s=60)
    tag = nonce()
    ask(gateway, tag)
    line = (
        'glm_gateway_plan_quota_remaining_ratio{provider="zai",surface="coding",'
        'window="tokens_5h"} 0.75'
    )
    wait_for(line, lambda: line in httpx.get(gateway.url + "/metrics", timeout=10).text)
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    assert 'glm_gateway_plan_quota_reset_timestamp_seconds{provider="zai",surface="coding"' in text
    row = next(r for r in dashboard(gateway)["plan_quota"] if r["surface"] == "coding")
    assert (row["provider"], row["window"], row["remaining"]) == ("zai", "tokens_5h", 0.75)
    reads = [
        q for q in httpx.get(sim.url + "/_sim/requests", timeout=10).json() if q["api"] == "quota"
    ]
    assert reads and all(q["headers"]["Authorization"] == "<redacted>" for q in reads)

    for i in range(3):  # the rest of the window
        ask(gateway, f"{tag}-{i}")
    assert surfaces_hit(sim, tag) == ["zai:coding"] * 4

    def plan_open() -> bool:
        rows = dashboard(gateway)["circuits"]
        return any(c["deployment"] == "zai:coding/glm-4.7" and c["state"] == "open" for c in rows)

    # the quota says the window is spent: its circuit opens before any request is refused
    wait_for("the plan's circuit open from the quota reading", plan_open)
    moved = ask(gateway, f"{tag}-after")
    assert surfaces_hit(sim, f"{tag}-after") == ["zai:general"]
    assert moved.headers["x-glm-attempts"] == "1"


@pytest.fixture
def pair(sim: Proc, tmp_path: Path) -> Iterator[list[Proc]]:
    """Two gateways sharing one Redis, on the config with the plan surface."""
    httpx.delete(sim.url + "/_sim/plans", timeout=10).raise_for_status()
    redis = RedisServer()
    state = {"backend": "redis", "redis_timeout_ms": 2000, "redis_prefix": nonce()}
    cfg = config_copy(tmp_path / "pair", gateway_yaml(state=state))
    (cfg / "providers.yaml").write_text(providers_yaml(quota=False))
    env = {**GATEWAY_ENV, "GLM_GATEWAY_REDIS_URL": redis.url}
    procs: list[Proc] = []
    try:
        for _ in range(2):
            procs.append(start_gateway(sim.url, cfg, env=env))
        yield procs
    finally:
        for p in procs:
            p.stop()
        redis.close()
        httpx.delete(sim.url + "/_sim/plans", timeout=10).raise_for_status()


def test_a_plan_window_one_replica_ran_into_is_honoured_by_the_other(
    sim: Proc, pair: list[Proc]
) -> None:
    a, b = pair
    set_plan(sim, requests=1, window_s=WINDOW_S)
    tag = nonce()
    started = time.time()
    ask(a, f"{tag}-a")
    spent = ask(a, f"{tag}-spent")
    assert surfaces_hit(sim, f"{tag}-spent") == ["zai:coding", "zai:general"]
    assert "code=1308" in spent.headers["x-glm-fallback-reason"]

    # b never saw the 1308: the plan's circuit a opened until the reset is in the shared state
    moved = ask(b, f"{tag}-b")
    assert surfaces_hit(sim, f"{tag}-b") == ["zai:general"]
    assert moved.headers["x-glm-attempts"] == "1"

    wait_past(int(started) + WINDOW_S + 2)
    ask(b, f"{tag}-back")
    assert surfaces_hit(sim, f"{tag}-back") == ["zai:coding"]
