"""The deploy/ topology as processes: a rolling restart under load, then shared state across it.

Two ``glm-gateway serve`` replicas share one ``redis-server`` (breakers, limits, keys) and one
simulator, behind nginx (``proxy_next_upstream error timeout``; with and without upstream
keep-alive). 24 openai-SDK clients
*without retries*, half of their requests streamed slowly enough to be in flight when a replica
stops, send a bounded load through nginx while the test rolls both replicas one at a time, as an
orchestrator would: SIGTERM, wait for exit 0, start it again on its port, wait until it is ready
and nginx sends it requests again; then the other. Not one request may fail; nginx's own
re-sends to the other replica (a refused connection) are counted and reported.

After the roll, with both replicas new:

- a virtual key created before the roll still works, and its ``rpm`` holds across both replicas:
  of ``2 * RPM`` requests sent to A and B in turn exactly ``RPM`` are admitted;
- a breaker opened by failures through replica A is open on replica B, which sends nothing to
  that deployment.

Checked by order and outcome, never by elapsed time; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.e2e import (
    AUTH,
    MASTER_KEY,
    directive,
    gateway_yaml,
    nonce,
    sim_requests,
    text_msg,
)
from tests.support.procs import Proc, config_copy, free_port
from tests.support.redis_server import RedisServer
from tests.support.topology import Nginx, replica

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(180)]

CLIENTS = 24
MAX_REQUESTS = 3000
"""Hard cap on the load, whatever happens."""
SERVED_BETWEEN = 24
"""Answers the load must get between two steps of the roll (so every step happens under it)."""
SERVER = {"shutdown_grace_s": 1.0, "drain_timeout_s": 10.0}
HELD_CHUNKS = 40
"""The stream held over each drain: 40 chunks 100 ms apart, ~4 s. At 20 (~2 s) one CI run found
a drain with nothing in flight, most likely because the loaded test client read the first chunk
(and sent the signal) so late that the stream ended within the 1 s grace."""
RPM = 6
BROKEN = "zai/glm-4.7"


@dataclass
class Topology:
    sim: Proc
    redis: RedisServer
    cfg: Path
    env: dict[str, str]
    ports: dict[str, int]
    procs: dict[str, Proc]
    nginx: Nginx

    def start(self, name: str, tag: str = "") -> Proc:
        return replica(f"replica-{name}{tag}", self.ports[name], self.sim, self.cfg, self.env)


@pytest.fixture(params=[0, 32], ids=["new-connections", "keepalive"])
def topology(simulator: Proc, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Topology]:
    """nginx opening a connection per request, or keeping up to 32 idle ones to the replicas
    (a request it sends on one the drain closes is a 502: nginx does not re-send a POST)."""
    redis = RedisServer()
    state = {"backend": "redis", "redis_prefix": nonce()}
    cfg = config_copy(tmp_path, gateway_yaml(server=SERVER, state=state))
    env = {"GLM_GATEWAY_REDIS_URL": redis.url}
    ports = {"a": free_port(), "b": free_port()}
    topo = Topology(simulator, redis, cfg, env, ports, {}, None)  # type: ignore[arg-type]
    try:
        topo.procs = {name: topo.start(name) for name in ports}
        topo.nginx = Nginx(tmp_path / "nginx", *ports.values(), keepalive=request.param)
        yield topo
    finally:
        if topo.nginx is not None:
            topo.nginx.stop()
        for proc in topo.procs.values():
            proc.stop()
        redis.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


class Load:
    """SDK clients through nginx, no retries: every failure the client would see is kept."""

    def __init__(self, url: str) -> None:
        self.clients = [
            openai.AsyncOpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
            for _ in range(CLIENTS)
        ]
        self.done = 0
        self.failures: list[str] = []
        self._next = 0
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()
        self._tasks = [asyncio.create_task(self._worker(c)) for c in self.clients]

    async def _worker(self, client: openai.AsyncOpenAI) -> None:
        while not self._stop.is_set() and self._next < MAX_REQUESTS:
            i, self._next = self._next, self._next + 1
            try:
                await one(client, i)
            except openai.APIStatusError as exc:  # the body says who answered and why
                self.failures.append(f"request {i}: {exc.status_code} {exc.response.text}"[:600])
            except Exception as exc:  # every failure is reported, none stops the load
                self.failures.append(f"request {i}: {type(exc).__name__}: {exc}"[:300])
            self.done += 1
            self._progress.set()

    async def served(self, n: int) -> None:
        target = min(self.done + n, MAX_REQUESTS)
        while self.done < target:
            self._progress.clear()
            await asyncio.wait_for(self._progress.wait(), 30)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        for c in self.clients:
            await c.close()


async def one(client: openai.AsyncOpenAI, i: int) -> None:
    """Request ``i``, streamed (12 chunks 30 ms apart) or not, half and half but in no pattern
    that nginx's round robin could line up with; raises unless fully answered."""
    if random.Random(i).random() < 0.5:
        rule = {"chunk_delay_ms": 30, "content": " ".join(["word"] * 60)}
        messages: Any = text_msg(f"roll {i} " + directive(rule, nonce()))
        stream = await client.chat.completions.create(model="auto", messages=messages, stream=True)
        text, finish = "", None
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        assert finish == "stop" and text.count("word") == 60, (finish, text[-60:])
    else:
        messages = text_msg(f"roll {i} " + directive({"latency_ms": 20}, nonce()))
        r = await client.chat.completions.create(model="auto", messages=messages)
        assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content


async def ready(http: httpx.AsyncClient, proc: Proc) -> bool:
    r = await http.get(proc.url + "/readyz")
    return r.status_code == 200 and r.json()["status"] == "ready"


async def roll(topo: Topology, name: str, http: httpx.AsyncClient) -> tuple[int, str]:
    """SIGTERM one replica, wait for its exit, start it again and wait until nginx uses it.
    Returns its exit code and the log of the run that ended."""
    old = topo.procs[name]
    # One stream sent to this replica directly and answering when the signal comes: the drain
    # has at least it to finish, whatever the load through nginx happens to be doing then.
    client = openai.AsyncOpenAI(base_url=old.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    rule = {"chunk_delay_ms": 100, "content": " ".join(["held"] * HELD_CHUNKS)}
    held = await client.chat.completions.create(
        model="auto", messages=text_msg("held " + directive(rule, nonce())), stream=True
    )
    chunks = held.__aiter__()
    first = await anext(chunks)
    old.proc.send_signal(signal.SIGTERM)
    text = "".join(c.delta.content or "" for c in first.choices)
    async for chunk in chunks:
        text += "".join(c.delta.content or "" for c in chunk.choices)
    await client.close()
    assert text.count("held") == HELD_CHUNKS, (
        f"the stream held over the drain of {name} was cut: {text}"
    )
    code = await asyncio.to_thread(old.proc.wait, 40)
    old.stop()
    log = old.log_text()
    seen = len(topo.nginx.lines())
    new = topo.procs[name] = await asyncio.to_thread(topo.start, name, "-rolled")
    for _ in range(200):
        if await ready(http, new):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"replica {name} did not get ready after its restart")
    await topo.nginx.until_routed_to(new.port, seen)
    return code, log


async def test_rolling_restart_loses_nothing_and_state_stays_shared(
    topology: Topology, http: httpx.AsyncClient
) -> None:
    topo = topology
    r = await http.post(
        topo.nginx.url + "/admin/keys", json={"name": "roll", "rpm": RPM}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    key = r.json()["key"]  # created before the roll: it must outlive both replicas

    load = Load(topo.nginx.url)
    exits: dict[str, tuple[int, str]] = {}
    try:
        await load.served(SERVED_BETWEEN)
        for name in ("a", "b"):
            exits[name] = await roll(topo, name, http)
            await load.served(SERVED_BETWEEN)
    finally:
        await load.stop()
    lines = topo.nginx.lines()

    statuses = Counter(line.split(" ")[0] for line in lines)
    resent = sum(1 for line in lines if "," in line.split(" ")[1])
    drained = {name: _drained(log) for name, (_, log) in exits.items()}
    print(
        f"\nrolling restart: {load.done} requests through nginx, {len(load.failures)} failed, "
        f"client retries 0 (max_retries=0), nginx re-sent {resent} to the other replica; "
        f"nginx statuses {dict(statuses)}; in flight at each drain {drained}"
    )
    assert not load.failures, (
        load.failures[:3] + load.failures[-2:],
        topo.nginx.error_log.read_text()[-1500:],
        [topo.procs[n].log_text()[-1500:] for n in topo.procs],
    )
    for name, (code, log) in exits.items():
        assert code == 0, f"replica {name} exited {code}: {log[-2000:]}"
        assert "still running after the drain" not in log, f"{name} cut requests"
        assert "Traceback" not in log, log[-3000:]
    assert all(drained.values()), f"a replica stopped with nothing in flight: {drained}"

    await _limit_holds_across_replicas(topo, http, key)
    await _breaker_is_shared(topo, http)


def _drained(log: str) -> int:
    """How many requests the replica was handling when it stopped accepting (its drain line)."""
    for line in log.splitlines():
        if "in-flight request(s)" in line and "draining" in line:
            return int(line.split("draining ")[1].split(" ")[0])
    return 0


async def _limit_holds_across_replicas(topo: Topology, http: httpx.AsyncClient, key: str) -> None:
    """``2 * RPM`` requests with the key, sent to A and B in turn (not left to nginx's choice):
    exactly ``RPM`` are admitted in all."""
    got: dict[str, list[int]] = {"a": [], "b": []}
    for i in range(2 * RPM):
        name = "ab"[i % 2]
        body = {"model": "auto", "messages": text_msg(f"limited {i} {nonce()}")}
        headers = {"Authorization": f"Bearer {key}"}
        r = await http.post(
            topo.procs[name].url + "/v1/chat/completions", json=body, headers=headers
        )
        got[name].append(r.status_code)
    print(f"rpm {RPM}, requests to A and B in turn: {got}")
    every = got["a"] + got["b"]
    assert every.count(200) == RPM and every.count(429) == RPM, got
    assert 200 in got["a"] and 200 in got["b"], got


async def _breaker_is_shared(topo: Topology, http: httpx.AsyncClient) -> None:
    a, b = topo.procs["a"], topo.procs["b"]
    pin = {**AUTH, "X-GLM-Providers": "zai", "X-GLM-Fallback": "none"}

    async def open_on(proc: Proc) -> bool:
        return BROKEN in (await http.get(proc.url + "/readyz")).json()["open_circuits"]

    for i in range(10):  # each request fails twice (one transient retry): 5 failures open it
        fault = directive({"match": {"provider": "zai"}, "status": 500}, nonce())
        body = {"model": "glm-4.7", "messages": text_msg(f"break {i} {fault}")}
        r = await http.post(a.url + "/v1/chat/completions", json=body, headers=pin)
        assert r.status_code >= 500, r.text
        if await open_on(a):
            break
    assert await open_on(a), "replica A never opened the circuit"
    assert await open_on(b), "replica B does not see the circuit A opened"
    needle = nonce()
    body = {"model": "glm-4.7", "messages": text_msg(f"after {needle}")}
    r = await http.post(b.url + "/v1/chat/completions", json=body, headers=pin)
    assert r.status_code != 200, r.text
    assert not sim_requests(topo.sim, needle), "replica B sent a request to the open deployment"
