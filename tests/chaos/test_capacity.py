"""A replica holds open as many streams at once as it admits (``server.max_in_flight``).

Each admitted request uses at most one upstream connection at a time, so the upstream pool is
as large as the gate. It was a fixed 512 while the gate admitted 1,024: the 513th concurrent
stream waited for a pooled connection and failed after ``connect_timeout_s`` with a timeout
that blamed the host (found by ``bench/sizing.py``). Here 600 openai-SDK streams are held open
together against an upstream that trickles forever: every one gets its first content chunk,
and the simulator sees every upstream stream let go afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.chaos.sim_admin import clear_faults, poll_until, set_faults, sim_streams
from tests.support.e2e import MASTER_KEY, module_gateway, nonce, text_msg
from tests.support.procs import Proc, start_simulator

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

OPEN = 600
"""Streams held open at once: over the old pool of 512, under ``max_in_flight`` (1,024)."""
TRICKLE_MS = 500
GUARD_S = 60.0
MODEL = "glm-4-32b"


@pytest.fixture(scope="module")
def sim() -> Iterator[Proc]:
    proc = start_simulator()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(sim, tmp_path_factory.mktemp("chaos-capacity")) as proc:
        yield proc


async def test_more_streams_than_the_old_pool_all_open(gw: Proc, sim: Proc) -> None:
    all_settled = asyncio.Event()
    settled_n = 0
    limits = httpx.Limits(max_connections=OPEN + 10, max_keepalive_connections=OPEN + 10)

    def settled() -> None:
        nonlocal settled_n
        settled_n += 1
        if settled_n == OPEN:
            all_settled.set()

    async def hold(client: openai.AsyncOpenAI, i: int) -> bool:
        """Open stream ``i``; once its first content came, keep it open until all settled."""
        try:
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=text_msg(f"hold {i} {nonce()}"),  # type: ignore[arg-type]
                stream=True,
            )
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        settled()
                        await all_settled.wait()
                        return True
        except openai.APIError:
            settled()
            raise
        settled()
        return False

    before = await sim_streams(sim)
    await set_faults(sim, [{"trickle_ms": TRICKLE_MS}])
    try:
        async with openai.AsyncOpenAI(
            base_url=gw.url + "/v1",
            api_key=MASTER_KEY,
            max_retries=0,
            timeout=GUARD_S,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=GUARD_S),
        ) as client:
            async with asyncio.timeout(GUARD_S):
                results = await asyncio.gather(
                    *(hold(client, i) for i in range(OPEN)), return_exceptions=True
                )
    finally:
        await clear_faults(sim)
    bad = [(i, r) for i, r in enumerate(results) if r is not True]
    assert not bad, f"{len(bad)} of {OPEN} streams did not open, e.g. {bad[:2]}"

    async def let_go() -> bool:
        now = await sim_streams(sim)
        return now["open"] == 0 and now["client_gone"] - before["client_gone"] >= OPEN

    assert await poll_until(let_go, 30.0), await sim_streams(sim)
