"""Redis over TLS (``rediss://``): the state lands there, on the connection the auto-pipeline
takes over, as it does in the clear.

A real ``redis-server`` with a TLS port and a self-signed certificate made by ``openssl`` for
this test; the backend trusts that certificate only (redis-py checks it and the host name).
The pipeline takes over the TLS connection after its first batch (its transport is the
loop's TLS one, on uvloop and on asyncio's own loop); batches then go on it, and one the
server kills is replaced by a new one.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from redis.asyncio import Redis

from gateway.catalogue.schema import BreakerConfig
from gateway.state.base import DeploymentAsk, Outcome, Report, Ticket
from gateway.state.redis import RedisState
from tests.support.procs import free_port
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, str]]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is missing: apt-get install -y openssl (.ci/run installs it)")
    d: Path = tmp_path_factory.mktemp("redis-tls")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()
    srv = RedisServer(
        extra=[
            "--tls-port", str(port),
            "--tls-cert-file", str(d / "cert.pem"),
            "--tls-key-file", str(d / "key.pem"),
            "--tls-ca-cert-file", str(d / "cert.pem"),
            "--tls-auth-clients", "no",
        ]
    )  # fmt: skip
    yield srv, f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={d / 'cert.pem'}"
    srv.stop()


async def _rounds(state: RedisState, n: int) -> None:
    """``n`` rounds of three tickets at once and their reports; none served locally."""
    asks = tuple(DeploymentAsk(f"p/m{i}") for i in range(4))
    for _ in range(n):
        ticket = Ticket(asks, 100, None)
        views = await asyncio.gather(*(state.before(ticket, time.time()) for _ in range(3)))
        assert not any(v.degraded for v in views), views
        for v in views:
            await state.after(Report((Outcome("p/m0", True, 0.01),), (), v.lease), time.time())
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_state_over_tls_goes_on_the_connection_taken_over(
    tls_server: tuple[RedisServer, str], loop: str
) -> None:
    """On uvloop (what ``serve`` runs) and on asyncio's own loop: each has its TLS transport."""
    server, url = tls_server
    run = uvloop.run if loop == "uvloop" else asyncio.run
    run(_over_tls(server, url))


async def _over_tls(server: RedisServer, url: str) -> None:
    state = RedisState(url, BreakerConfig(), prefix=f"tls{free_port()}", timeout_ms=5000)
    await _rounds(state, 4)
    wire = state._auto._wire
    assert wire is not None and wire.alive
    assert wire.transport.get_extra_info("ssl_object") is not None  # TLS, not the clear port
    (health,) = [h for h in await state.health(time.time()) if h.target_id == "p/m0"]
    assert health.requests == 12  # every report landed (read back over TLS)
    plain = Redis.from_url(server.url)  # (the clear port, to kill the TLS connection)
    port = wire.transport.get_extra_info("sockname")[1]
    assert await plain.client_kill(f"127.0.0.1:{port}")
    await plain.aclose()
    for _ in range(100):  # the server's close reaches the loop
        if not wire.alive:
            break
        await asyncio.sleep(0.01)
    assert not wire.alive
    await _rounds(state, 2)  # on a new TLS connection, taken over in turn
    again = state._auto._wire
    assert again is not None and again is not wire and again.alive
    assert again.transport.get_extra_info("ssl_object") is not None
    assert not state.degraded
    (health,) = [h for h in await state.health(time.time()) if h.target_id == "p/m0"]
    assert health.requests == 18
    await state.aclose()
