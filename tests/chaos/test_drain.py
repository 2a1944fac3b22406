"""Shutdown of a real ``glm-gateway serve`` process on SIGTERM and SIGINT.

On the first signal ``/readyz`` says 503 while requests are still served for
``server.shutdown_grace_s``; then the gateway stops accepting, in-flight requests get
``server.drain_timeout_s``, the ones still running end with the shutdown error (a 503, or an
error event and no ``[DONE]`` in a started stream) and the process exits 0. A second signal
ends the grace and the drain at once. Checked by order and outcome, never by elapsed time.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.e2e import (
    AUTH,
    assert_error_shape,
    chat_body,
    directive,
    log_for,
    module_gateway,
    nonce,
    parse_sse,
    text_msg,
)
from tests.support.procs import Proc

pytestmark = pytest.mark.slow

EXIT_WAIT_S = 30.0
"""A bound on waiting for the process to exit (the test fails past it, it never passes by it)."""


def slow_stream(words: int, delay_ms: int = 100) -> dict[str, Any]:
    """A streamed chat whose answer is ``words`` words, sent 5 words a chunk ``delay_ms`` apart."""
    rule = {"chunk_delay_ms": delay_ms, "content": " ".join(["word"] * words)}
    return chat_body(text_msg("hi " + directive(rule, nonce())), stream=True)


class Stream:
    """A streamed request read to its end in a task; ``started`` is set on its first bytes."""

    def __init__(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        self.started = asyncio.Event()
        self.status = 0
        self.text = ""
        self.task = asyncio.create_task(self._run(client, body))

    async def _run(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
            self.status = r.status_code
            parts: list[bytes] = []
            async for part in r.aiter_raw():
                parts.append(part)
                self.started.set()
            self.text = b"".join(parts).decode()
        self.started.set()

    def events(self) -> list[Any]:
        return parse_sse(self.text)


async def wait_ready_status(client: httpx.AsyncClient, want: int) -> httpx.Response:
    for _ in range(100):
        r = await client.get("/readyz")
        if r.status_code == want:
            return r
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never answered {want}")


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


async def wait_refused(port: int) -> None:
    for _ in range(400):
        if await asyncio.to_thread(refuses_connections, port):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the gateway never stopped accepting connections")


def exit_code(proc: Proc) -> int:
    try:
        return proc.proc.wait(EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the gateway did not exit; log:\n{proc.log_text()[-3000:]}") from None


def assert_cut_by_shutdown(stream: Stream) -> None:
    assert stream.status == 200
    events = stream.events()
    assert "[DONE]" not in events, events[-3:]
    assert any("choices" in e for e in events if isinstance(e, dict)), "the stream never started"
    err = assert_error_shape(events[-1])
    assert err["code"] == "server_shutting_down" and err["type"] == "server_error"
    assert "shutting down" in err["message"]


def assert_complete(stream: Stream) -> None:
    assert stream.status == 200
    events = stream.events()
    assert events[-1] == "[DONE]", events[-3:]
    assert not [e for e in events if isinstance(e, dict) and "error" in e]
    finish = [c["finish_reason"] for e in events if isinstance(e, dict) for c in e["choices"]]
    assert finish[-1] == "stop" or "stop" in finish


async def test_sigterm_grace_drain_cut_and_exit_0(simulator: Proc, tmp_path: Path) -> None:
    server = {"shutdown_grace_s": 2.0, "drain_timeout_s": 8.0}
    with module_gateway(simulator, tmp_path, server=server) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
            # ~6 s of chunks: ends well inside the drain. ~20 s: outlives grace + drain.
            short = Stream(client, slow_stream(275))
            long = Stream(client, slow_stream(1000))
            held_id = "req_held_" + nonce()
            held_rule = {"hang": True}  # the host never answers: only the shutdown ends it
            held = asyncio.create_task(
                client.post(
                    "/v1/chat/completions",
                    json=chat_body(text_msg("hi " + directive(held_rule, nonce()))),
                    headers={**AUTH, "X-Request-Id": held_id},
                )
            )
            await asyncio.wait_for(short.started.wait(), 30)
            await asyncio.wait_for(long.started.wait(), 30)
            assert (await client.get("/readyz")).status_code == 200

            gw.proc.send_signal(signal.SIGTERM)
            ready = await wait_ready_status(client, 503)
            assert ready.json()["status"] == "draining"
            # Still in the grace: a new request is served as usual.
            fresh = await client.post(
                "/v1/chat/completions", json=chat_body(text_msg("hi")), headers=AUTH
            )
            assert fresh.status_code == 200 and fresh.json()["choices"][0]["message"]["content"]

            await wait_refused(gw.port)
            assert not short.task.done(), "the short stream should still be running in the drain"
            await asyncio.wait_for(asyncio.gather(short.task, long.task), EXIT_WAIT_S)
            answer = await asyncio.wait_for(held, EXIT_WAIT_S)

        assert_complete(short)
        assert_cut_by_shutdown(long)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        err = assert_error_shape(answer.json())
        assert err["code"] == "server_shutting_down" and err["type"] == "server_error"
        assert exit_code(gw) == 0
        record = log_for(gw, held_id)
        assert record is not None and record["status"] == 503
        assert record["error"] == "server_shutting_down"


async def test_sigint_then_second_sigint_ends_the_drain_at_once(
    simulator: Proc, tmp_path: Path
) -> None:
    # Grace and drain far longer than the exit wait: only the second signal can end them.
    server = {"shutdown_grace_s": 60.0, "drain_timeout_s": 60.0}
    with module_gateway(simulator, tmp_path, server=server) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
            long = Stream(client, slow_stream(1000))
            await asyncio.wait_for(long.started.wait(), 30)

            gw.proc.send_signal(signal.SIGINT)
            ready = await wait_ready_status(client, 503)
            assert ready.json()["status"] == "draining"
            fresh = await client.post(
                "/v1/chat/completions", json=chat_body(text_msg("hi")), headers=AUTH
            )
            assert fresh.status_code == 200
            assert not long.task.done()

            gw.proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(long.task, EXIT_WAIT_S)

        assert_cut_by_shutdown(long)
        assert exit_code(gw) == 0
        assert "SIGINT again" in gw.log_text()
