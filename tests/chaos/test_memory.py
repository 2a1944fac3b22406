"""Memory over a bounded soak: large inline images and slow stream readers.

The gateway's RSS is read from /proc after a warm-up batch and after each later batch of the
same mix; each must stay within ``MAX_GROWTH`` of the idle level, and the last batch within
``MAX_GROWTH`` of the first. A leak of one body per request (~3 MB) breaks either bound within
a batch.

The gateway runs with glibc's defaults, as a user runs it. Without the heap trim after large
bodies (``gateway/edge/heap.py``), RSS settled at the peak of concurrent large bodies seen so
far, which depends on how requests happened to overlap (measured: 76 to 144 MiB after the same
warm-up, and steps of 3-22 MiB between later batches); with it, every level is within ~1 MiB of
idle. So the levels are held to the idle level too, which fails when trimming stops working.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator

import httpx
import orjson
import pytest

from gateway.edge import heap
from tests.chaos.sim_admin import clear_faults, metric, rss_bytes, scrape, set_faults
from tests.support.e2e import AUTH, chat_body, module_gateway, nonce
from tests.support.procs import Proc, start_simulator

pytestmark = pytest.mark.chaos

CHAT = "/v1/chat/completions"
IMAGE_BYTES = 2_300_000
"""Decoded; ~3.1 MB as a base64 data: URL."""
BATCH = 16
"""Per batch: half non-streaming image requests, half image streams read slowly."""
AT_ONCE = 8
BATCHES = 4
IMAGES = 4
"""Fresh images per batch, each sent once streaming and once not."""
JSON = {"Content-Type": "application/json"}
MAX_GROWTH = 0.10
REPLY_WORDS = 3000
"""A ~20 KB answer in ~600 chunks (~170 KB of SSE): a slow reader holds it open ~0.5 s."""
SLOW_READ_BYTES = 4096
SLOW_READ_PAUSE_S = 0.01
GUARD_S = 60.0
MODEL = "glm-4.6v"


@pytest.fixture(scope="module")
def sim() -> Iterator[Proc]:
    proc = start_simulator()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(
        sim,
        tmp_path_factory.mktemp("chaos-memory"),
        breaker={"failure_threshold": 100_000, "error_min_requests": 100_000},
    ) as proc:
        yield proc


def image_bodies() -> tuple[bytes, bytes]:
    """(non-streaming, streaming) request bodies with a fresh image, ``SLOT`` in the text (the
    client encodes ~3 MB once per image, not per request: the client shares the two cores)."""
    raw = b"\x89PNG\r\n\x1a\n" + os.urandom(IMAGE_BYTES - 8)
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe SLOT"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]
    plain = orjson.dumps(chat_body(messages, model=MODEL))
    return plain, orjson.dumps(chat_body(messages, model=MODEL, stream=True))


async def one(c: httpx.AsyncClient, i: int, bodies: tuple[bytes, bytes]) -> int:
    """Request ``i`` (odd: a stream read slowly); the bytes of answer received."""
    stream = i % 2 == 1
    body = bodies[stream].replace(b"SLOT", f"{i} {nonce()}".encode(), 1)
    async with asyncio.timeout(GUARD_S):
        if not stream:
            r = await c.post(CHAT, content=body, headers=JSON)
            assert r.status_code == 200, r.text[:300]
            return len(r.content)
        got = b""
        async with c.stream("POST", CHAT, content=body, headers=JSON) as r:
            assert r.status_code == 200
            async for part in r.aiter_raw(SLOW_READ_BYTES):
                got += part
                await asyncio.sleep(SLOW_READ_PAUSE_S)
        assert got.rstrip().endswith(b"data: [DONE]"), got[-200:]
        return len(got)


async def batch(gw: Proc, images: list[tuple[bytes, bytes]], at_once: int = AT_ONCE) -> int:
    gate = asyncio.Semaphore(at_once)

    async def bounded(c: httpx.AsyncClient, i: int) -> int:
        async with gate:
            return await one(c, i, images[(i // 2) % len(images)])

    async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=GUARD_S) as c:
        sizes = await asyncio.gather(*(bounded(c, i) for i in range(BATCH)))
    return sum(sizes)


async def settled_rss(gw: Proc) -> int:
    await asyncio.sleep(0.5 + heap.MIN_GAP_S)
    samples = await scrape(gw)
    assert metric(samples, "glm_gateway_in_flight_requests") == 0
    return rss_bytes(gw.proc.pid)


async def test_rss_stays_flat_over_a_soak_with_large_images_and_slow_readers(
    gw: Proc, sim: Proc
) -> None:
    # fresh random images per batch (a cache keyed by body would show as growth)
    reply = " ".join(f"word{i}" for i in range(REPLY_WORDS))
    await set_faults(sim, [{"content": reply}])
    try:
        idle = rss_bytes(gw.proc.pid)
        # the warm-up runs the whole batch at once: the allocator's high-water mark for
        # concurrent large bodies is reached here, not by chance in a later batch
        await batch(gw, [image_bodies() for _ in range(IMAGES)], at_once=BATCH)
        warm = await settled_rss(gw)
        levels = []
        for _ in range(BATCHES):
            await batch(gw, [image_bodies() for _ in range(IMAGES)])
            levels.append(await settled_rss(gw))
    finally:
        await clear_faults(sim)
    mib = [round(x / 2**20, 1) for x in (idle, warm, *levels)]
    print(f"\nRSS MiB: idle {mib[0]}, after warm-up {mib[1]}, after each batch {mib[2:]}")
    worst = max(warm, *levels)
    assert worst <= idle * (1 + MAX_GROWTH), f"RSS grew past idle +{MAX_GROWTH:.0%}: {mib}"
    # nor may the soak climb from batch to batch
    assert levels[-1] <= levels[0] * (1 + MAX_GROWTH), f"RSS climbed over the soak: {mib}"
