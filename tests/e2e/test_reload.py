"""Config reload of a real ``glm-gateway serve`` under load: SIGHUP and ``POST /admin/reload``.

The gateway starts on a copy of config/ without the ``together`` provider. While six openai-SDK
clients (no retries, half of them streaming) keep it busy, the test:

1. writes the full providers.yaml back and sends SIGHUP: generation 2 serves, ``together``'s
   deployments are in the plan and answer requests pinned to them;
2. writes an invalid gateway.yaml (an unknown key, a bad type) and sends SIGHUP: refused, the log
   names file and key, generation 2 keeps serving; ``POST /admin/reload`` answers 422 with the
   same problems (401 without a key, 403 with a virtual key);
3. restores the valid config through ``POST /admin/reload`` (200, generation 3).

Not one request of the load may fail, and some must have been in flight across a reload (the
reload's log line counts those that finish on the old generation). A second test starts a long
stream on ``together``, removes that provider by a reload mid-stream, and sees the stream finish
normally while a new request can no longer reach it. A third opens a breaker and spends part of
a key's rpm, reloads, and finds both where they were.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.support.e2e import (
    AUTH,
    GATEWAY_ENV,
    assert_error_shape,
    directive,
    nonce,
    sdk_client,
    text_msg,
)
from tests.support.procs import CONFIG, Proc, config_copy, start_gateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ADDED = "together"
"""The provider a reload adds (or removes); the simulator serves it either way."""
CLIENTS = 6
MAX_REQUESTS = 2000
"""Hard cap on the load, whatever happens."""
IN_FLIGHT = re.compile(r"(\d+) request\(s\) finish on generation")


def write_providers(cfg: Path, without: str | None) -> None:
    """The shipped providers.yaml, without the provider ``without``."""
    data = yaml.safe_load((CONFIG / "providers.yaml").read_text())
    if without is not None:
        del data["providers"][without]
    (cfg / "providers.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def gateway_copy(simulator: Proc, tmp_path: Path) -> Iterator[tuple[Proc, Path]]:
    cfg = config_copy(tmp_path)
    write_providers(cfg, without=ADDED)
    proc = start_gateway(simulator.url, cfg, env=GATEWAY_ENV)
    try:
        yield proc, cfg
    finally:
        proc.stop()


@pytest.fixture
async def http(gateway_copy: tuple[Proc, Path]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_copy[0].url, timeout=30) as c:
        yield c


async def generation(http: httpx.AsyncClient) -> int:
    r = await http.get("/readyz")
    return int(r.json()["config"]["generation"])


async def reloads(http: httpx.AsyncClient, result: str) -> float:
    text = (await http.get("/metrics")).text
    m = re.search(rf'^glm_gateway_config_reloads_total\{{result="{result}"\}} (\S+)$', text, re.M)
    assert m, "no glm_gateway_config_reloads_total series"
    return float(m[1])


async def until(probe: Any, what: str, tries: int = 400) -> None:
    for _ in range(tries):
        if await probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


async def pinned(http: httpx.AsyncClient, provider: str) -> httpx.Response:
    body = {"model": "glm-4.7", "messages": text_msg("pinned " + nonce())}
    headers = {**AUTH, "X-GLM-Providers": provider, "X-GLM-Fallback": "providers"}
    return await http.post("/v1/chat/completions", json=body, headers=headers)


class Load:
    """``CLIENTS`` SDK clients without retries, one request at a time each, half streamed (the
    streams slow enough to be in flight when a reload happens)."""

    def __init__(self, proc: Proc) -> None:
        self.clients = [sdk_client(proc, timeout=30) for _ in range(CLIENTS)]
        self.done = 0
        self.failures: list[str] = []
        self._next = 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._worker(c)) for c in self.clients]

    async def _worker(self, client: openai.AsyncOpenAI) -> None:
        while not self._stop.is_set() and self._next < MAX_REQUESTS:
            i, self._next = self._next, self._next + 1
            try:
                await self._one(client, i)
            except Exception as exc:  # every failure is reported, none stops the load
                self.failures.append(f"request {i}: {type(exc).__name__}: {exc}"[:300])
            self.done += 1

    @staticmethod
    async def _one(client: openai.AsyncOpenAI, i: int) -> None:
        if i % 2:
            rule = {"chunk_delay_ms": 30, "content": " ".join(["word"] * 40)}
            messages: Any = text_msg(f"load {i} " + directive(rule, nonce()))
            stream = await client.chat.completions.create(
                model="auto", messages=messages, stream=True
            )
            text, finish = "", None
            async for chunk in stream:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
            assert finish == "stop" and text.count("word") == 40, (finish, text[-60:])
        else:
            messages = text_msg(f"load {i} " + directive({"latency_ms": 100}, nonce()))
            r = await client.chat.completions.create(model="auto", messages=messages)
            assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content

    async def served(self, n: int) -> None:
        target = self.done + n

        async def enough() -> bool:
            return self.done >= target

        await until(enough, f"{n} more answers (done {self.done})", tries=600)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        for c in self.clients:
            await c.close()


async def test_reload_under_load_adds_a_deployment_and_refuses_an_invalid_config(
    gateway_copy: tuple[Proc, Path], http: httpx.AsyncClient
) -> None:
    proc, cfg = gateway_copy
    assert await generation(http) == 1
    before = await pinned(http, ADDED)
    assert before.status_code == 400, before.text  # not configured yet
    load = Load(proc)
    try:
        await load.served(10)
        # 1. A reload that adds the provider's deployments, by SIGHUP.
        write_providers(cfg, without=None)
        proc.proc.send_signal(signal.SIGHUP)

        async def second() -> bool:
            return await generation(http) == 2

        await until(second, "generation 2")
        after = await pinned(http, ADDED)
        assert after.status_code == 200, after.text
        assert after.headers["x-glm-provider"] == ADDED
        await load.served(10)

        # 2. An invalid config, by SIGHUP: refused, the running one keeps serving.
        gateway_yaml = (cfg / "gateway.yaml").read_text()
        bad = gateway_yaml.replace("routing:\n", "routing:\n  retry_bakcoff_s: 1\n", 1)
        bad = bad.replace("max_attempts: 8", "max_attempts: eight", 1)
        assert bad.count("retry_bakcoff_s") == 1 and "eight" in bad
        (cfg / "gateway.yaml").write_text(bad)
        proc.proc.send_signal(signal.SIGHUP)

        async def refused() -> bool:
            return await reloads(http, "invalid") == 1

        await until(refused, "the refusal to be counted")
        await load.served(10)
        assert await generation(http) == 2
        assert (await pinned(http, ADDED)).status_code == 200

        # 3. POST /admin/reload: master key only; the same problems in the error shape.
        assert (await http.post("/admin/reload")).status_code == 401
        vkey = (await http.post("/admin/keys", json={"name": "reload"}, headers=AUTH)).json()
        virtual = {"Authorization": f"Bearer {vkey['key']}"}
        assert (await http.post("/admin/reload", headers=virtual)).status_code == 403
        r = await http.post("/admin/reload", headers=AUTH)
        assert r.status_code == 422, r.text
        err = assert_error_shape(r.json())
        assert err["code"] == "config_invalid"
        problems = " | ".join(err["problems"])
        assert "gateway.yaml" in problems, problems
        assert "routing.retry_bakcoff_s" in problems and "routing.max_attempts" in problems
        (cfg / "gateway.yaml").write_text(gateway_yaml)
        r = await http.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["generation"] == 3
        assert r.json()["deployments_added"] == []
        await load.served(10)
    finally:
        await load.stop()

    assert not load.failures, load.failures[:5]
    assert await reloads(http, "ok") == 2 and await reloads(http, "invalid") == 2
    log = proc.log_text()
    added = [line for line in log.splitlines() if "generation 2 serving" in line]
    assert added and f"{ADDED}/glm-4.7" in added[0].split("deployments added: ")[1], added
    refusals = [line for line in log.splitlines() if "config reload refused (SIGHUP)" in line]
    assert refusals and "gateway.yaml" in refusals[0] and "retry_bakcoff_s" in refusals[0]
    crossed = sum(int(n) for n in IN_FLIGHT.findall(log))
    print(f"\nreload: {load.done} requests, 0 failed, {crossed} finished on an older generation")
    assert crossed > 0, "no request was in flight across a reload: the test proved nothing"


async def test_a_stream_finishes_on_the_config_it_started_with(
    gateway_copy: tuple[Proc, Path], http: httpx.AsyncClient
) -> None:
    proc, cfg = gateway_copy
    write_providers(cfg, without=None)
    assert (await http.post("/admin/reload", headers=AUTH)).status_code == 200
    rule = {"chunk_delay_ms": 100, "content": " ".join(["word"] * 100)}
    body = {
        "model": "glm-4.7",
        "stream": True,
        "messages": text_msg("long " + directive(rule, nonce())),
    }
    headers = {**AUTH, "X-GLM-Providers": ADDED, "X-GLM-Fallback": "providers"}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.headers["x-glm-provider"] == ADDED
        parts = r.aiter_text()
        text = await anext(parts)
        # The stream is under way: reload a config without its deployment.
        write_providers(cfg, without=ADDED)
        reloaded = await http.post("/admin/reload", headers=AUTH)
        assert reloaded.status_code == 200, reloaded.text
        assert f"{ADDED}/glm-4.7" in reloaded.json()["deployments_removed"]
        assert (await pinned(http, ADDED)).status_code == 400  # new requests: gone
        async for part in parts:
            text += part
    assert text.count('"finish_reason":"stop"') == 1 and text.rstrip().endswith("[DONE]")
    assert text.count("word") == 100
    assert "1 request(s) finish on generation 2" in proc.log_text()


async def test_keys_limits_and_breakers_carry_over_a_reload(
    gateway_copy: tuple[Proc, Path], http: httpx.AsyncClient
) -> None:
    cfg = gateway_copy[1]
    made = await http.post("/admin/keys", json={"name": "carried", "rpm": 2}, headers=AUTH)
    assert made.status_code == 201, made.text
    key = {"Authorization": f"Bearer {made.json()['key']}"}

    async def ask(headers: dict[str, str], text: str) -> httpx.Response:
        body = {"model": "glm-4.7", "messages": text_msg(text)}
        return await http.post("/v1/chat/completions", json=body, headers=headers)

    assert (await ask(key, "one")).status_code == 200
    pin = {**AUTH, "X-GLM-Providers": "zai", "X-GLM-Fallback": "none"}
    for i in range(10):  # each request fails twice (one transient retry): 5 failures open it
        fault = directive({"match": {"provider": "zai"}, "status": 500}, nonce())
        assert (await ask(pin, f"break {i} {fault}")).status_code >= 500
        if "zai/glm-4.7" in (await http.get("/readyz")).json()["open_circuits"]:
            break
    write_providers(cfg, without=None)  # a reload that changes the deployments
    assert (await http.post("/admin/reload", headers=AUTH)).status_code == 200
    assert await generation(http) == 2
    assert "zai/glm-4.7" in (await http.get("/readyz")).json()["open_circuits"]
    assert (await ask(key, "two")).status_code == 200  # the key, and its count, survive
    limited = await ask(key, "three")
    assert limited.status_code == 429, limited.text
