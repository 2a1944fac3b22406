"""1,000 clients that hang up mid-stream: every upstream stream is let go, and the gateway's
tasks, sockets and file descriptors return to where they were.

The upstream trickles forever (one content chunk every ``TRICKLE_MS``), so a stream the gateway
forgets to close stays open at the simulator: ``GET /_sim/streams`` must read ``open: 0`` and
count every stream as ``client_gone``. Baselines are read after a warm-up, and the readings
after the storm are polled until they are back (bounded by ``SETTLE_S``; no timed assertion).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.chaos.sim_admin import (
    clear_faults,
    fd_counts,
    metric,
    poll_until,
    scrape,
    set_faults,
    sim_streams,
)
from tests.support.e2e import AUTH, chat_body, log_records, module_gateway, nonce, text_msg
from tests.support.procs import Proc, start_simulator

pytestmark = pytest.mark.chaos

CHAT = "/v1/chat/completions"
CLIENTS = 1000
AT_ONCE = 50
TRICKLE_MS = 100
SETTLE_S = 30.0
GUARD_S = 20.0
MODEL = "glm-4-32b"
PROVIDERS = ("vllm", "zai")
"""Half the streams relayed as bytes (vllm), half re-encoded (zai's dialect)."""


@pytest.fixture(scope="module")
def sim() -> Iterator[Proc]:
    proc = start_simulator()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(
        sim,
        tmp_path_factory.mktemp("chaos-disconnects"),
        breaker={"failure_threshold": 100_000, "error_min_requests": 100_000},
    ) as proc:
        yield proc


async def hang_up_after_first_chunk(c: httpx.AsyncClient, i: int) -> bool:
    """Stream request ``i``; leave as soon as the first content arrives. True if it did."""
    provider = PROVIDERS[i % len(PROVIDERS)]
    body = chat_body(text_msg(f"leave early {i} {nonce()}"), model=MODEL, stream=True)
    headers = {"X-GLM-Providers": provider, "X-Request-Id": f"gone-{i}-{nonce()}"}
    async with asyncio.timeout(GUARD_S), c.stream("POST", CHAT, json=body, headers=headers) as r:
        if r.status_code != 200:
            return False
        async for line in r.aiter_lines():
            if line.startswith("data:") and '"content"' in line:
                return True  # leaving the block closes the connection mid-stream
    return False


async def gateway_readings(gw: Proc) -> dict[str, float]:
    fds, sockets = fd_counts(gw.proc.pid)
    samples = await scrape(gw)
    return {
        "fds": fds,
        "sockets": sockets,
        "tasks": metric(samples, "glm_gateway_event_loop_tasks") or 0.0,
        "in_flight": metric(samples, "glm_gateway_in_flight_requests") or 0.0,
    }


async def test_a_thousand_disconnects_leave_nothing_behind(gw: Proc, sim: Proc) -> None:
    # warm-up: complete streams on both paths (pools, caches, lazily built objects)
    async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=GUARD_S) as c:
        for i in range(2 * AT_ONCE):
            body = chat_body(text_msg(f"warm {i}"), model=MODEL, stream=True)
            r = await c.post(CHAT, json=body, headers={"X-GLM-Providers": PROVIDERS[i % 2]})
            assert r.status_code == 200 and "[DONE]" in r.text
    await asyncio.sleep(0.5)
    base = await gateway_readings(gw)
    sim_before = await sim_streams(sim)

    await set_faults(sim, [{"trickle_ms": TRICKLE_MS}])
    gate = asyncio.Semaphore(AT_ONCE)
    limits = httpx.Limits(max_connections=AT_ONCE, max_keepalive_connections=AT_ONCE)

    async def one(c: httpx.AsyncClient, i: int) -> bool | BaseException:
        async with gate:
            try:
                return await hang_up_after_first_chunk(c, i)
            except Exception as exc:
                return exc

    try:
        async with httpx.AsyncClient(
            base_url=gw.url, headers=AUTH, timeout=GUARD_S, limits=limits
        ) as c:
            results = await asyncio.gather(*(one(c, i) for i in range(CLIENTS)))
    finally:
        await clear_faults(sim)
    bad = [(i, r) for i, r in enumerate(results) if r is not True]
    assert not bad, f"{len(bad)} streams did not start, e.g. {bad[:3]}"

    # the simulator saw every upstream stream closed by the gateway
    async def upstreams_closed() -> bool:
        now = await sim_streams(sim)
        return now["open"] == 0 and now["client_gone"] - sim_before["client_gone"] >= CLIENTS

    assert await poll_until(upstreams_closed, SETTLE_S), await sim_streams(sim)
    sim_after = await sim_streams(sim)
    assert sim_after["opened"] - sim_before["opened"] == CLIENTS, (sim_before, sim_after)
    assert sim_after["completed"] == sim_before["completed"], (sim_before, sim_after)

    # and the gateway is back to its baseline
    last: dict[str, Any] = {}

    async def back_to_baseline() -> bool:
        last.update(await gateway_readings(gw))
        return (
            last["in_flight"] == 0
            and last["tasks"] <= base["tasks"]
            and last["fds"] <= base["fds"]
            and last["sockets"] <= base["sockets"]
        )

    assert await poll_until(back_to_baseline, SETTLE_S, every_s=0.25), (base, last)

    records = [r for r in log_records(gw) if str(r.get("request_id", "")).startswith("gone-")]
    assert len(records) == CLIENTS
    assert {r["status"] for r in records} == {499}, {r["status"] for r in records}
    print(f"\ndisconnects: baseline {base}, after {last}, simulator {sim_after}")
