"""Session-wide real servers: one simulator and one gateway routed to it."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from tests.support.e2e import sdk_client
from tests.support.procs import Proc, start_gateway, start_simulator

# When this run started: tests/zz_audit reads only the logs written since.
os.environ.setdefault("GLM_TEST_SESSION_STARTED", str(time.time() - 1))


@pytest.fixture(scope="session")
def simulator() -> Iterator[Proc]:
    proc = start_simulator()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def gateway(simulator: Proc) -> Iterator[Proc]:
    """The shipped config, every provider sent to the simulator, auth off (no master key)."""
    proc = start_gateway(simulator.url, env={"GLM_GATEWAY_MASTER_KEY": "sk-test-master"})
    yield proc
    proc.stop()


@pytest.fixture
async def client(gateway: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_client(gateway, timeout=30) as c:
        yield c
