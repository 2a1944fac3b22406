"""Session affinity across two replicas sharing a real Redis, with the simulator's prompt cache.

A multi-turn agent session (a long system prompt, history growing every turn) alternates between
two gateway replicas. Each request names the equivalent deployments of glm-4.7 in a random order
(``X-GLM-Providers``): what a per-request balancer does. Without affinity the session would go
wherever that order says; with it, it stays on the deployment that answered its first turn,
and the simulator's per-deployment prefix cache hits. Orders come from a seeded RNG, so the
test is the same on every run. Nothing asserts on timing.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.e2e import (
    MASTER_KEY,
    directive,
    nonce,
    sdk_client,
)
from tests.support.procs import Proc
from tests.support.redis_server import RedisServer
from tests.support.topology import redis_replicas

POOL = ("together", "fireworks", "deepinfra", "novita")
"""Deployments of glm-4.7 that speak plain OpenAI chat in the shipped config."""
TURNS = 30


def start_pair(
    sim: Proc, redis: RedisServer, tmp: Path, affinity: dict[str, Any] | None = None
) -> list[Proc]:
    routing = {"affinity": affinity} if affinity else {}
    return redis_replicas(sim, redis.url, tmp, timeout_ms=2000, routing=routing)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pair(
    simulator: Proc, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Proc]]:
    procs = start_pair(simulator, redis, tmp_path_factory.mktemp("affinity"))
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
async def clients(pair: list[Proc]) -> AsyncIterator[list[openai.AsyncOpenAI]]:
    a, b = sdk_client(pair[0]), sdk_client(pair[1])
    async with a, b:
        yield [a, b]


def system_prompt(tag: str) -> str:
    """About 20 KB of instructions, unique to ``tag`` (no other test shares its prefix)."""
    rule = "Read the file before editing it; keep the diff small; run the tests after. "
    return f"You are a coding agent ({tag}). " + rule * 270


def tool_output(turn: int) -> str:
    return f"turn {turn}: $ pytest -q\n" + f"tests/test_mod_{turn}.py ....F.. [100%]\n" * 12


class Session:
    """One agent conversation: its history, and where each turn went and what it cached."""

    def __init__(self, tag: str, headers: dict[str, str] | None = None) -> None:
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt(tag)}]
        self.headers = headers or {}
        self.providers: list[str] = []
        self.prompt = self.cached = 0

    async def turn(
        self, client: openai.AsyncOpenAI, n: int, order: list[str], **extra: str
    ) -> None:
        self.messages.append({"role": "user", "content": tool_output(n)})
        headers = {"X-GLM-Providers": ",".join(order), "X-GLM-Fallback": "providers"}
        raw = await client.chat.completions.with_raw_response.create(
            model="glm-4.7",
            messages=self.messages,  # type: ignore[arg-type]
            max_tokens=16,
            extra_headers={**headers, **self.headers, **extra},
        )
        answer = raw.parse()
        self.providers.append(raw.headers["x-glm-provider"])
        assert answer.usage is not None
        self.prompt += answer.usage.prompt_tokens
        details = answer.usage.prompt_tokens_details
        self.cached += (details.cached_tokens or 0) if details is not None else 0
        self.messages.append({"role": "assistant", "content": answer.choices[0].message.content})

    @property
    def stay(self) -> float:
        """The share of turns on the deployment that served most of them."""
        return Counter(self.providers).most_common(1)[0][1] / len(self.providers)

    @property
    def hit_ratio(self) -> float:
        return self.cached / self.prompt


async def run(session: Session, clients: list[openai.AsyncOpenAI], seed: int, turns: int) -> None:
    rng = random.Random(seed)
    for n in range(turns):
        await session.turn(clients[n % 2], n, rng.sample(POOL, len(POOL)))


async def metric(proc: Proc, name: str, having: str = "") -> float:
    """The sum of a counter's samples on one replica (those whose labels contain ``having``)."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(proc.url + "/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if (line.startswith(name + "{") or line.startswith(name + " ")) and having in line
    )


@pytest.mark.slow
async def test_a_30_turn_session_stays_on_one_deployment_across_two_replicas(
    clients: list[openai.AsyncOpenAI],
) -> None:
    session = Session(nonce(), {"X-GLM-Session": nonce()})
    await run(session, clients, seed=17, turns=TURNS)
    assert session.stay >= 0.95, session.providers
    assert session.hit_ratio >= 0.90, (session.cached, session.prompt)


async def test_cached_prompt_tokens_are_counted_per_provider(pair: list[Proc]) -> None:
    async with sdk_client(pair[0]) as a, sdk_client(pair[1]) as b:
        session = Session(nonce(), {"X-GLM-Session": nonce()})
        await run(session, [a, b], seed=3, turns=3)
    where = f'provider="{session.providers[0]}"'
    cached = [await metric(p, "glm_gateway_tokens_total", 'direction="cached"') for p in pair]
    mine = [await metric(p, "glm_gateway_tokens_total", where) for p in pair]
    assert sum(cached) >= session.cached > 0
    assert all(m > 0 for m in mine)  # each replica counted its turns


async def test_without_a_session_header_the_prompt_prefix_keys_the_session(
    clients: list[openai.AsyncOpenAI],
) -> None:
    session = Session(nonce())
    await run(session, clients, seed=5, turns=8)
    assert len(set(session.providers)) == 1, session.providers
    assert session.cached > 0


async def test_a_failing_pinned_host_repins_once_and_the_session_stays_there(
    pair: list[Proc], clients: list[openai.AsyncOpenAI], simulator: Proc
) -> None:
    session = Session(nonce(), {"X-GLM-Session": nonce()})
    await run(session, clients, seed=9, turns=3)
    pinned = session.providers[0]
    assert set(session.providers) == {pinned}
    before = sum([await metric(p, "glm_gateway_affinity_repins_total") for p in pair])
    rules = [{"match": {"provider": pinned}, "status": 503, "message": "overloaded"}]
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.post(simulator.url + "/_sim/faults", json=rules)).raise_for_status()
        try:
            rng = random.Random(11)
            for n in range(3, 6):
                await session.turn(clients[n % 2], n, rng.sample(POOL, len(POOL)))
        finally:
            (await http.delete(simulator.url + "/_sim/faults")).raise_for_status()
    moved = session.providers[3]
    assert moved != pinned
    rng = random.Random(12)
    for n in range(6, 10):  # the old host is healthy again: the session stays where it went
        await session.turn(clients[n % 2], n, rng.sample(POOL, len(POOL)))
    assert session.providers[3:] == [moved] * 7, session.providers
    after = sum([await metric(p, "glm_gateway_affinity_repins_total") for p in pair])
    assert after - before == 1


async def test_a_caller_fault_does_not_move_the_pin(clients: list[openai.AsyncOpenAI]) -> None:
    session = Session(nonce(), {"X-GLM-Session": nonce()})
    await run(session, clients, seed=21, turns=2)
    refused = directive({"status": 400, "message": "temperature out of range"}, nonce())
    with pytest.raises(openai.BadRequestError):  # the host refuses it: the caller's fault
        await clients[0].chat.completions.create(
            model="glm-4.7",
            messages=[*session.messages, {"role": "user", "content": refused}],  # type: ignore[list-item]
            max_tokens=16,
            extra_headers={"X-GLM-Fallback": "providers", **session.headers},
        )
    await run(session, clients, seed=22, turns=2)
    assert len(set(session.providers)) == 1, session.providers


async def test_cached_tokens_reach_messages_and_responses_clients(pair: list[Proc]) -> None:
    system = system_prompt(nonce())
    sid = f"user_ab_account_cd_session_{nonce()}"
    messages: list[Any] = []
    async with anthropic.AsyncAnthropic(
        base_url=pair[0].url, api_key=MASTER_KEY, max_retries=0
    ) as claude:
        reads = []
        for n in range(3):
            messages.append({"role": "user", "content": tool_output(n)})
            msg = await claude.messages.create(
                model="glm-4.7",
                system=system,
                messages=messages,
                max_tokens=16,
                metadata={"user_id": sid},
            )
            reads.append(msg.usage.cache_read_input_tokens or 0)
            messages.append({"role": "assistant", "content": msg.content})
    assert reads[0] == 0 and reads[1] > 0 and reads[2] > reads[1]
    async with sdk_client(pair[1]) as client:
        got = []
        for _ in range(2):
            r = await client.responses.create(
                model="glm-4.7", instructions=system, input="status?", prompt_cache_key=sid
            )
            assert r.usage is not None
            got.append(r.usage.input_tokens_details.cached_tokens)
    assert got[1] > 0


async def test_streams_report_cached_tokens_in_each_apis_usage(pair: list[Proc]) -> None:
    system = system_prompt(nonce())
    sid = nonce()
    async with sdk_client(pair[0]) as client:
        cached = []
        for n in range(2):
            stream = await client.chat.completions.create(
                model="glm-4.7",
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": tool_output(n)},
                ],
                max_tokens=16,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"X-GLM-Session": sid},
            )
            usage = [c.usage async for c in stream if c.usage is not None]
            details = usage[-1].prompt_tokens_details
            cached.append((details.cached_tokens or 0) if details is not None else 0)
    assert cached[0] == 0 and cached[1] > 0
    async with anthropic.AsyncAnthropic(
        base_url=pair[1].url, api_key=MASTER_KEY, max_retries=0
    ) as claude:
        for host in ("zai", "together"):  # the host's own Messages API; translated from chat
            reads = []
            for n in range(2):
                async with claude.messages.stream(
                    model="glm-4.7",
                    system=system + host,
                    messages=[{"role": "user", "content": tool_output(n)}],
                    max_tokens=16,
                    extra_headers={"x-claude-code-session-id": sid, "X-GLM-Providers": host},
                ) as s:
                    final = await s.get_final_message()
                    assert s.response.headers["x-glm-provider"] == host
                    native = "api=messages:native" in s.response.headers.get("x-glm-adapted", "")
                reads.append(final.usage.cache_read_input_tokens or 0)
            assert native == (host == "zai")
            assert reads[0] == 0 and reads[1] > 0, host
