"""Weighted spread over equivalent deployments (``routing.spread``), across two replicas.

The operator's setup from issue 17: three self-hosted vLLM servers of glm-4-9b as three
providers with the same price and weights 1, 1, 2, and two gateway replicas sharing a real
Redis. Every server is real and on loopback: a simulator of its own (it serves the three
providers of this config), ``redis-server``, and the replicas as ``glm-gateway serve``.
No assertion on timing: shares are counted, waits are bounded.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.e2e import AUTH, GATEWAY_ENV, gateway_yaml, nonce, sdk_client, text_msg
from tests.support.procs import Proc, config_copy, start_gateway, start_simulator
from tests.support.redis_server import RedisServer

URL = "http://127.0.0.1:9/v1"  # replaced by --simulator
WEIGHTS = {"vllm-a": 1, "vllm-b": 1, "vllm-c": 2}
RPM = 3
"""The rpm of vllm-a's glm-4-32b deployment (glm-4-32b is served by vllm-a and vllm-b only)."""
PIN_VARIANT, PIN_RPM = "glm-4-air-4b", 4
"""Served by vllm-a and vllm-b only, each with this rpm (the pinned-session test's alone)."""
ROOM_VARIANT, ROOM_RPM = "glm-4-flash", 40
"""Served by vllm-a (with this rpm) and vllm-b (no limit): the headroom test's alone."""


def providers_yaml() -> str:
    free = {"input": 0, "output": 0, "as_of": "2026-12-01", "source": "self-hosted"}
    providers: dict[str, Any] = {}
    for name, weight in WEIGHTS.items():
        deps: list[dict[str, Any]] = [
            {"variant": "glm-4-9b", "model": "THUDM/glm-4-9b-chat", "weight": weight, "price": free}
        ]
        if name != "vllm-c":
            limit = {"rpm": RPM} if name == "vllm-a" else {}
            deps.append(
                {"variant": "glm-4-32b", "model": "THUDM/GLM-4-32B-0414", "price": free, **limit}
            )
            deps.append(
                {"variant": PIN_VARIANT, "model": "glm-air-4b", "price": free, "rpm": PIN_RPM}
            )
            room = {"rpm": ROOM_RPM} if name == "vllm-a" else {}
            deps.append({"variant": ROOM_VARIANT, "model": "glm-flash", "price": free, **room})
        providers[name] = {"name": name, "dialect": "vllm", "base_url": URL, "deployments": deps}
    return yaml.safe_dump({"providers": providers})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, list[Proc]]]:
    """(simulator, two replicas) on one config with spread on and one shared Redis."""
    tmp: Path = tmp_path_factory.mktemp("spread")
    state = {"backend": "redis", "redis_timeout_ms": 2000, "redis_prefix": nonce()}
    routing = {"spread": {"enabled": True}}
    cfg = config_copy(tmp / "gw", gateway_yaml(state=state, routing=routing))
    sim_cfg = config_copy(tmp / "sim")
    for d in (cfg, sim_cfg):
        (d / "providers.yaml").write_text(providers_yaml())
    redis = RedisServer()
    env = {**GATEWAY_ENV, "GLM_GATEWAY_REDIS_URL": redis.url}
    procs: list[Proc] = []
    try:
        procs.append(start_simulator(sim_cfg))
        procs += [start_gateway(procs[0].url, cfg, env=env) for _ in range(2)]
        yield procs[0], procs[1:]
    finally:
        for p in procs:
            p.stop()
        redis.close()


async def _spread_load(
    replicas: list[Proc], n: int, concurrency: int, model: str = "glm-4-9b"
) -> Counter[str]:
    """Send ``n`` chat requests over the replicas in turn, ``concurrency`` at a time; how
    many each provider answered."""
    answered: Counter[str] = Counter()
    clients = [sdk_client(p) for p in replicas]
    turn = itertools.cycle(clients)
    gate = asyncio.Semaphore(concurrency)
    # Prompts unique to this call: requests repeating an earlier test's prompt would be one
    # session with it (routing.affinity keys a session by its prompt prefix) and go to its pin.
    tag = nonce()

    async def one(i: int) -> None:
        async with gate:
            raw = await next(turn).chat.completions.with_raw_response.create(
                model=model,
                messages=text_msg(f"spread {tag} {i}"),
                max_tokens=8,  # type: ignore[arg-type]
            )
            answered[raw.headers["x-glm-provider"]] += 1

    try:
        async with asyncio.timeout(240):
            await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        for c in clients:
            await c.close()
    return answered


def _shares(answered: Counter[str]) -> dict[str, float]:
    total = sum(answered.values())
    return {p: round(100 * answered[p] / total, 1) for p in WEIGHTS}


async def test_weights_1_1_2_share_the_load_25_25_50_across_two_replicas(
    cluster: tuple[Proc, list[Proc]],
) -> None:
    _, replicas = cluster
    answered = await _spread_load(replicas, 400, concurrency=8)
    shares = _shares(answered)
    assert sum(answered.values()) == 400
    for provider, want in {"vllm-a": 25, "vllm-b": 25, "vllm-c": 50}.items():
        assert abs(shares[provider] - want) <= 5, shares


async def test_route_shows_the_group_and_shares_and_metrics_count_picks(
    cluster: tuple[Proc, list[Proc]],
) -> None:
    _, replicas = cluster
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as http:
        body = {"model": "glm-4-9b", "messages": text_msg("where to?")}
        out = (await http.post(replicas[0].url + "/v1/route", json=body)).json()
        metrics = (await http.get(replicas[1].url + "/metrics")).text
    [group] = out["spread"]
    members = {m["deployment"]: m for m in group["members"]}
    assert set(members) == {f"{p}/glm-4-9b" for p in WEIGHTS}
    assert {d: m["share"] for d, m in members.items()} == {
        "vllm-a/glm-4-9b": 0.25,
        "vllm-b/glm-4-9b": 0.25,
        "vllm-c/glm-4-9b": 0.5,
    }
    assert all(isinstance(m["in_flight"], int) for m in members.values())
    assert [c["spread_group"] for c in out["candidates"]] == [0, 0, 0]
    picks = [
        line for line in metrics.splitlines() if line.startswith("glm_gateway_spread_picks_total")
    ]
    assert any('deployment="vllm-c/glm-4-9b"' in line for line in picks), picks


async def test_a_slow_deployment_gets_fewer_requests_under_load(
    cluster: tuple[Proc, list[Proc]],
) -> None:
    sim, replicas = cluster
    rule = {"match": {"provider": "vllm-c"}, "latency_ms": 300}
    async with httpx.AsyncClient(timeout=30) as http:
        (await http.post(sim.url + "/_sim/faults", json=[rule])).raise_for_status()
        try:
            answered = await _spread_load(replicas, 120, concurrency=12)
        finally:
            (await http.delete(sim.url + "/_sim/faults")).raise_for_status()
    shares = _shares(answered)
    # idle it would take 50%; slowed, it holds more requests in flight and is chosen less
    assert shares["vllm-c"] < 30, shares
    assert sum(answered.values()) == 120


async def test_a_deployment_at_its_rpm_is_skipped_for_the_rest_of_its_window(
    cluster: tuple[Proc, list[Proc]],
) -> None:
    _, replicas = cluster
    answered = await _spread_load(replicas, 4 * RPM, concurrency=1, model="glm-4-32b")
    assert answered == Counter({"vllm-a": RPM, "vllm-b": 3 * RPM}), answered
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as http:
        body = {"model": "glm-4-32b", "messages": text_msg("and now?")}
        out = (await http.post(replicas[1].url + "/v1/route", json=body)).json()
    assert [c["deployment"] for c in out["candidates"]] == ["vllm-b/glm-4-32b"]
    [refused] = [r for r in out["rejected"] if r["provider"] == "vllm-a"]
    assert any(f"at its rpm limit ({RPM} requests/min)" in why for why in refused["reasons"])


async def test_a_pinned_sessions_requests_are_reserved_on_its_pinned_deployment(
    cluster: tuple[Proc, list[Proc]],
) -> None:
    """The rpm reservation goes where the request goes: a pinned session fills its own
    deployment up to its rpm, then moves to the equivalent one, never past the limit (were
    the reservation on the round-robin's pick instead, every request in flight would follow
    the pin and the pinned deployment would get them all)."""
    sim, replicas = cluster
    headers = {**AUTH, "X-GLM-Session": nonce()}
    body = {"model": PIN_VARIANT, "messages": text_msg("pinned"), "max_tokens": 8}
    rule = {"match": {"variant": PIN_VARIANT}, "latency_ms": 400}
    async with httpx.AsyncClient(timeout=60) as http:

        async def ask(replica: Proc) -> str:
            r = await http.post(replica.url + "/v1/chat/completions", json=body, headers=headers)
            assert r.status_code == 200, r.text
            return r.headers["x-glm-provider"]

        pinned = await ask(replicas[0])
        (await http.post(sim.url + "/_sim/faults", json=[rule])).raise_for_status()
        try:  # in flight together: each is reserved before any has answered
            got = await asyncio.gather(*(ask(replicas[i % 2]) for i in range(2 * PIN_RPM - 2)))
        finally:
            (await http.delete(sim.url + "/_sim/faults")).raise_for_status()
    other = ({"vllm-a", "vllm-b"} - {pinned}).pop()
    assert Counter(got) == Counter({pinned: PIN_RPM - 1, other: PIN_RPM - 1}), got


async def test_sessions_spread_over_equivalent_deployments_while_each_stays_on_its_own(
    cluster: tuple[Proc, list[Proc]],
) -> None:
    """Issue 17's proof: agent sessions over two replicas sharing one Redis. Each first turn
    is a new session, shared among the equivalent deployments by weight (1:1:2); every later
    turn, on either replica, follows the session's pin."""
    _, replicas = cluster
    tag = nonce()
    sessions = [
        {"id": nonce(), "messages": [{"role": "system", "content": f"agent {tag} {i}"}]}
        for i in range(16)
    ]
    went: dict[int, list[str]] = {i: [] for i in range(len(sessions))}
    async with httpx.AsyncClient(headers=AUTH, timeout=60) as http:
        for turn in range(4):
            for i, s in enumerate(sessions):
                s["messages"].append({"role": "user", "content": f"turn {turn}"})
                body = {"model": "glm-4-9b", "messages": s["messages"], "max_tokens": 8}
                r = await http.post(
                    replicas[(i + turn) % 2].url + "/v1/chat/completions",
                    json=body,
                    headers={"X-GLM-Session": s["id"]},
                )
                assert r.status_code == 200, r.text
                went[i].append(r.headers["x-glm-provider"])
                answer = r.json()["choices"][0]["message"]["content"]
                s["messages"].append({"role": "assistant", "content": answer})
    assert all(len(set(turns)) == 1 for turns in went.values()), went
    homes = Counter(turns[0] for turns in went.values())
    # each replica's round-robin gives 8 new sessions exactly 2/2/4 from a fresh start, and
    # within one of that from wherever earlier requests left it
    assert 6 <= homes["vllm-c"] <= 10 and 2 <= homes["vllm-a"] <= 6, homes
    assert 2 <= homes["vllm-b"] <= 6, homes


async def test_a_deployment_that_used_most_of_its_rpm_gets_less_than_its_weight(
    cluster: tuple[Proc, list[Proc]],
) -> None:
    """Equal weights; vllm-a has an rpm, vllm-b none. With 30 of vllm-a's 40 requests a minute
    used, weight alone would still send it 6 of the next 12 (it has room for 10); weighed by
    its headroom (a quarter left) it gets about a fifth, and vllm-b the rest."""
    _, replicas = cluster
    async with httpx.AsyncClient(headers={**AUTH, "X-GLM-Providers": "vllm-a"}) as http:
        for i in range(30):
            body = {"model": ROOM_VARIANT, "messages": text_msg(f"fill {i}"), "max_tokens": 4}
            r = await http.post(replicas[i % 2].url + "/v1/chat/completions", json=body)
            assert r.status_code == 200 and r.headers["x-glm-provider"] == "vllm-a", r.text
    answered = await _spread_load(replicas, 12, concurrency=1, model=ROOM_VARIANT)
    assert sum(answered.values()) == 12
    assert answered["vllm-a"] <= 4, answered
