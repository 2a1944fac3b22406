"""Process-level load shedding through a real gateway process: a bounded queue, 503 with
``Retry-After`` past it, and cheap endpoints that are never shed.

The gateway holds one request at a time (``server.max_in_flight: 1``) and lets one wait
(``max_queued: 1``). Slow requests hang in the simulator until their client goes away, so
nothing here depends on timing: each step polls ``/metrics`` for the state it needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.e2e import AUTH, assert_error_shape, directive, module_gateway, nonce
from tests.support.procs import Proc

QUEUE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def small(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    server = {"max_in_flight": 1, "max_queued": 1, "queue_timeout_s": QUEUE_TIMEOUT_S}
    with module_gateway(simulator, tmp_path_factory.mktemp("overload"), server=server) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


async def chat(http: aiohttp.ClientSession, gw: Proc, text: str) -> tuple[int, dict[str, str], Any]:
    body = {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}
    async with http.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.json()


def hanging() -> str:
    return "slow " + directive({"hang": True}, nonce())


async def metric(http: aiohttp.ClientSession, gw: Proc, name: str) -> float:
    async with http.get(gw.url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 30) -> None:
    end = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


async def gauge_is(http: aiohttp.ClientSession, gw: Proc, name: str, value: float) -> None:
    async def check() -> bool:
        return await metric(http, gw, name + " ") == value

    await until(check, f"{name} == {value}")


async def end(task: asyncio.Task[Any]) -> None:
    """Drop a hanging request's connection (the gateway cancels it and frees its slot)."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_past_the_cap_one_request_waits_and_the_next_is_shed(
    small: Proc, http: aiohttp.ClientSession
) -> None:
    shed_before = await metric(http, small, "glm_gateway_shed_total")
    holder = asyncio.create_task(chat(http, small, hanging()))
    await gauge_is(http, small, "glm_gateway_in_flight_requests", 1)
    waiter = asyncio.create_task(chat(http, small, "queued"))
    await gauge_is(http, small, "glm_gateway_queued_requests", 1)

    status, headers, body = await chat(http, small, "one too many")
    assert status == 503
    err = assert_error_shape(body)
    assert (err["type"], err["code"]) == ("server_error", "overloaded")
    assert "1 requests are in flight" in err["message"]
    assert headers["retry-after"] == "2" and headers["x-request-id"]
    for cheap in ("/healthz", "/readyz", "/metrics"):  # never shed
        async with http.get(small.url + cheap) as r:
            assert r.status == 200, cheap

    await end(holder)  # its slot goes to the waiting request
    status, headers, body = await waiter
    assert status == 200 and body["choices"][0]["message"]["content"]
    assert await metric(http, small, "glm_gateway_shed_total") == shed_before + 1
    assert await metric(http, small, 'glm_gateway_shed_total{reason="queue_full"') >= 1
    assert await metric(http, small, "glm_gateway_queue_seconds_count") >= 1
    await gauge_is(http, small, "glm_gateway_in_flight_requests", 0)


async def test_a_request_that_waits_too_long_is_shed(
    small: Proc, http: aiohttp.ClientSession
) -> None:
    holder = asyncio.create_task(chat(http, small, hanging()))
    await gauge_is(http, small, "glm_gateway_in_flight_requests", 1)
    try:
        status, headers, body = await chat(http, small, "waits in vain")
    finally:
        await end(holder)
    assert status == 503 and headers["retry-after"] == "2"
    assert "no slot freed within 2s" in assert_error_shape(body)["message"]
    assert await metric(http, small, 'glm_gateway_shed_total{reason="queue_timeout"') >= 1
    await gauge_is(http, small, "glm_gateway_in_flight_requests", 0)
    status, _, _ = await chat(http, small, "room again")
    assert status == 200
