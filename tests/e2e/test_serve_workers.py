"""``glm-gateway serve --workers N`` as real processes: two workers on one port with Redis
state, ``/metrics`` and the dashboard adding up both, a worker that dies started again, and a
SIGTERM to the parent draining both (a stream under way completes, exit 0). In-memory state
with several workers is refused with one clear line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos.test_drain import (
    EXIT_WAIT_S,
    Stream,
    assert_complete,
    exit_code,
    slow_stream,
    wait_ready_status,
    wait_refused,
)
from tests.support.e2e import AUTH, GATEWAY_ENV, chat_body, gateway_yaml, text_msg
from tests.support.procs import ROOT, Proc, config_copy, free_port, start_simulator
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

REQUESTS = 60
CONCURRENCY = 12


@pytest.fixture(scope="module")
def simulator() -> Iterator[Proc]:
    sim = start_simulator()
    yield sim
    sim.stop()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def start_workers(sim: Proc, redis: RedisServer, tmp: Path, n: int = 2) -> Proc:
    server = {"shutdown_grace_s": 1.0, "drain_timeout_s": 20.0}
    cfg = config_copy(tmp, gateway_yaml(server=server))
    port = free_port()
    args = ["serve", "--config", str(cfg), "--port", str(port), "--simulator", sim.url]
    env = {**GATEWAY_ENV, "GLM_GATEWAY_REDIS_URL": redis.url}
    return Proc("gateway-workers", [*args, "--workers", str(n)], port, "/healthz", env)


def worker_pids(parent: int) -> list[int]:
    out = subprocess.run(
        ["ps", "--ppid", str(parent), "-o", "pid="], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def metric(text: str, name: str) -> float:
    """The sum of a family's samples named exactly ``name`` (any labels)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def send_chats(url: str, n: int) -> list[int]:
    """``n`` chats over ``CONCURRENCY`` connections, each request on a new connection (so the
    kernel hands them to both workers)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> int:
            async with gate:
                body = chat_body(text_msg(f"count me {i}"))
                r = await client.post("/v1/chat/completions", json=body, headers=AUTH)
                return r.status_code

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_in_memory_state_with_two_workers_is_refused(tmp_path: Path) -> None:
    cfg = config_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "GLM_GATEWAY_REDIS_URL"}
    args = ["serve", "--config", str(cfg), "--port", str(free_port()), "--workers", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        env={**env, **GATEWAY_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--workers 2 needs shared state" in done.stderr
    assert "GLM_GATEWAY_REDIS_URL" in done.stderr


async def test_two_workers_add_up_restart_and_drain(
    simulator: Proc, redis: RedisServer, tmp_path: Path
) -> None:
    gw = start_workers(simulator, redis, tmp_path)
    try:
        assert len(worker_pids(gw.proc.pid)) == 2
        statuses = await send_chats(gw.url, REQUESTS)
        assert statuses == [200] * REQUESTS
        fresh = httpx.Limits(max_keepalive_connections=0)  # a worker is killed below
        async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=fresh) as client:
            text = (await client.get("/metrics")).text
            assert metric(text, "glm_gateway_workers") == 2
            assert metric(text, "glm_gateway_requests_total") == REQUESTS
            board = (await client.get("/dashboard/data", headers=AUTH)).json()
            assert board["totals"]["requests"] == REQUESTS

            # A worker killed outright is started again; the port keeps answering meanwhile.
            victim = worker_pids(gw.proc.pid)[0]
            os.kill(victim, signal.SIGKILL)
            for _ in range(300):  # until the new worker answers its siblings (it serves)
                text = (await client.get("/metrics")).text
                if metric(text, "glm_gateway_workers") == 2:
                    break
                await asyncio.sleep(0.05)
            pids = worker_pids(gw.proc.pid)
            assert len(pids) == 2 and victim not in pids
            assert metric(text, "glm_gateway_workers") == 2
            assert await send_chats(gw.url, 10) == [200] * 10
            assert "exited with -9; starting it again" in gw.log_text()

            # SIGTERM to the parent: both workers drain; a stream under way completes.
            stream = Stream(client, slow_stream(150, delay_ms=100))
            await asyncio.wait_for(stream.started.wait(), 30)
            gw.proc.send_signal(signal.SIGTERM)
            ready = await wait_ready_status(client, 503)
            assert ready.json()["status"] == "draining"
            await wait_refused(gw.port)
            await asyncio.wait_for(stream.task, EXIT_WAIT_S)
        assert_complete(stream)
        assert exit_code(gw) == 0
        assert gw.log_text().count("SIGTERM: /readyz answers 503") == 2
    finally:
        gw.stop()
