"""The simulator's per-deployment prompt cache: hits only where the prefix was seen, in time.

A simulator of its own (in process, on loopback), driven over HTTP by aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.simulator.models import SimModel
from gateway.simulator.server import SimServer, start_simulator

MODELS = [
    SimModel("zai", "glm-4.7", "glm-4.7", "zhipu", 200_000, 128_000, False, True, False, False),
    SimModel("vllm", "glm-4.7", "glm-4.7", "vllm", 200_000, 128_000, False, True, False, False),
]
SYSTEM = {"role": "system", "content": "Follow the house rules. " * 400}


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    server: SimServer = await start_simulator(MODELS)
    async with aiohttp.ClientSession(base_url=server.url) as s:
        yield s
    await server.stop()


async def chat(http: aiohttp.ClientSession, provider: str, messages: list[Any]) -> dict[str, Any]:
    body = {"model": "glm-4.7", "max_tokens": 8, "messages": messages}
    headers = {"Authorization": "Bearer k"}
    async with http.post(f"/{provider}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        usage: dict[str, Any] = (await r.json())["usage"]
        return usage


def cached(usage: dict[str, Any]) -> int:
    return int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0))


async def test_a_prefix_hits_on_the_deployment_that_saw_it_and_nowhere_else(
    http: aiohttp.ClientSession,
) -> None:
    first = [SYSTEM, {"role": "user", "content": "one"}]
    assert cached(await chat(http, "zai", first)) == 0
    second = [*first, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "two"}]
    again = await chat(http, "zai", second)
    assert 0 < cached(again) < again["prompt_tokens"]
    assert cached(await chat(http, "vllm", second)) == 0  # another deployment: its own cache
    assert cached(await chat(http, "zai", [SYSTEM, {"role": "user", "content": "other"}])) > 0
    async with http.get("/_sim/cache") as r:
        stats = await r.json()
    assert stats["cached_tokens"] > 0 and 0 < stats["hit_ratio"] < 1


async def test_a_prefix_older_than_the_ttl_misses(http: aiohttp.ClientSession) -> None:
    async with http.delete("/_sim/cache", params={"ttl_s": "0.05"}) as r:
        assert (await r.json())["ttl_s"] == 0.05
    first = [SYSTEM, {"role": "user", "content": "one"}]
    await chat(http, "zai", first)
    await asyncio.sleep(0.2)  # past the TTL: the prefix has lapsed
    assert cached(await chat(http, "zai", first)) == 0


@pytest.mark.parametrize("ttl", ["0", "-1", "soon"])
async def test_a_bad_ttl_is_refused(http: aiohttp.ClientSession, ttl: str) -> None:
    async with http.delete("/_sim/cache", params={"ttl_s": ttl}) as r:
        assert r.status == 400
        assert "ttl_s" in await r.text()


async def test_the_native_messages_surface_reports_cache_reads(
    http: aiohttp.ClientSession,
) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body: dict[str, Any] = {
        "model": "glm-4.7",
        "max_tokens": 8,
        "system": SYSTEM["content"],
        "messages": [{"role": "user", "content": "one"}],
    }
    reads = []
    for _ in range(2):
        async with http.post("/zai/anthropic/v1/messages", json=body, headers=headers) as r:
            usage = (await r.json())["usage"]
        reads.append(usage["cache_read_input_tokens"])
    assert reads[0] == 0 and reads[1] > 0
    assert usage["input_tokens"] >= 0
