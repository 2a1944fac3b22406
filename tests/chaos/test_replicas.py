"""Chaos: two gateway replicas behind nginx, one killed and one drained under load.

nginx (``proxy_next_upstream error timeout``, ``proxy_buffering off``) balances two
``glm-gateway serve`` replicas that share one simulator. Eight openai-SDK clients
(``max_retries=3``) send a bounded load, half of it streamed. Meanwhile:

1. replica A is SIGKILLed: nginx sends new requests to B; a non-streamed request that was on A
   gets a 502 from nginx and the SDK retries it; a stream already answering on A is cut, and
   only then does the client send it again (nothing can save a stream whose server died);
2. A is restarted on its port and taken back into rotation by nginx;
3. replica B gets SIGTERM: it keeps serving for its grace, stops accepting (nginx moves on to
   A), lets its in-flight streams finish and exits 0. Not one request fails from here on.

Every request ends with a complete answer. Checked by order and outcome, not by elapsed time;
the whole run is bounded (``LOAD_BOUND_S``).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.e2e import MASTER_KEY, directive, gateway_yaml, nonce, text_msg
from tests.support.procs import Proc, config_copy, free_port
from tests.support.topology import Nginx, replica

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

TOTAL = 240
"""Requests in the run, every other one streamed."""
CLIENTS = 8
KILL_A_AT = 40
"""Completed requests before replica A is SIGKILLed."""
RESTART_A_AT = 80
TERM_B_AT = 140
LOAD_BOUND_S = 55.0
CLIENT_ATTEMPTS = 3
"""Whole-request attempts by the client (each with the SDK's own retries inside)."""
SERVER = {"shutdown_grace_s": 1.0, "drain_timeout_s": 10.0}


@dataclass
class Run:
    """What the clients saw, tagged with the phase it happened in."""

    phase: str = "steady"
    next_index: int = 0
    completed: int = 0
    answers: dict[int, str] = field(default_factory=dict)
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    progress: asyncio.Event = field(default_factory=asyncio.Event)


def request_messages(i: int, stream: bool) -> list[dict[str, Any]]:
    # Streams: ~15 events 50 ms apart, long enough to be in flight when a replica goes.
    rule: dict[str, Any] = (
        {"chunk_delay_ms": 50, "content": " ".join(["word"] * 60)}
        if stream
        else {"latency_ms": 250}
    )
    return text_msg(f"request {i} " + directive(rule, nonce()))


async def ask(client: openai.AsyncOpenAI, i: int) -> tuple[str, str | None]:
    """One request through the SDK: (content, finish_reason)."""
    messages: Any = request_messages(i, i % 2 == 0)
    if i % 2:
        r = await client.chat.completions.create(model="auto", messages=messages)
        return r.choices[0].message.content or "", r.choices[0].finish_reason
    text, finish = "", None
    stream = await client.chat.completions.create(model="auto", messages=messages, stream=True)
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish


async def client_loop(client: openai.AsyncOpenAI, run: Run) -> None:
    while run.next_index < TOTAL:
        i = run.next_index
        run.next_index += 1
        for _ in range(CLIENT_ATTEMPTS):
            try:
                text, finish = await ask(client, i)
            except Exception as exc:  # any failure is recorded with its phase
                run.failures.append((run.phase, i, f"{type(exc).__name__}: {exc}"[:300]))
                continue
            if text and finish == "stop":
                run.answers[i] = text
                break
            run.failures.append((run.phase, i, f"incomplete: finish={finish} text={text[:40]!r}"))
        run.completed += 1
        run.progress.set()


async def until_completed(run: Run, n: int) -> None:
    while run.completed < n:
        run.progress.clear()
        await run.progress.wait()


async def controller(run: Run, nginx: Nginx, procs: dict[str, Proc], start_a: Any) -> int:
    """Kill A, restart it, drain B; returns B's exit code."""
    await until_completed(run, KILL_A_AT)
    run.phase = "a-killed"
    procs["a"].proc.kill()
    await asyncio.to_thread(procs["a"].proc.wait, 10)
    procs["a"].stop()  # closes its log
    await until_completed(run, RESTART_A_AT)
    seen = len(nginx.lines())
    procs["a"] = await asyncio.to_thread(start_a)
    await nginx.until_routed_to(procs["a"].port, seen)
    run.phase = "a-back"
    await until_completed(run, TERM_B_AT)
    run.phase = "b-draining"  # from here on not one failure is allowed
    procs["b"].proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(procs["b"].proc.wait, 30)
    run.phase = "b-gone"
    return int(code)


async def test_kill_one_replica_drain_the_other(simulator: Proc, tmp_path: Path) -> None:
    cfg = config_copy(tmp_path, gateway_yaml(server=SERVER))
    port_a, port_b = free_port(), free_port()
    procs = {
        "a": replica("replica-a", port_a, simulator, cfg),
        "b": replica("replica-b", port_b, simulator, cfg),
    }
    nginx = Nginx(tmp_path / "nginx", port_a, port_b)
    run = Run()
    try:
        async with openai.AsyncOpenAI(
            base_url=nginx.url + "/v1", api_key=MASTER_KEY, max_retries=3, timeout=30
        ) as client:
            load = asyncio.gather(*(client_loop(client, run) for _ in range(CLIENTS)))
            control = controller(
                run, nginx, procs, lambda: replica("replica-a2", port_a, simulator, cfg)
            )
            b_exit, _ = await asyncio.wait_for(asyncio.gather(control, load), LOAD_BOUND_S)
        lines = nginx.lines()
    finally:
        nginx.stop()
        for proc in procs.values():
            proc.stop()

    statuses = Counter(line.split(" ")[0] for line in lines)
    retried = sum(1 for line in lines if "," in line)
    print(
        f"\nchaos: {len(run.answers)}/{TOTAL} answered; client re-sends {len(run.failures)} "
        f"(phases {Counter(p for p, _, _ in run.failures)}); nginx statuses {dict(statuses)}; "
        f"nginx tried a second replica {retried}x; replica B exit {b_exit}"
    )
    missing = sorted(set(range(TOTAL)) - set(run.answers))
    assert not missing, f"requests without a complete answer: {missing[:20]}; {run.failures[:5]}"
    # Only the kill may cost a re-send, and only of what was on A when it died.
    late = [f for f in run.failures if f[0] != "a-killed"]
    assert not late, f"failures outside the SIGKILL phase: {late[:5]}"
    assert len(run.failures) <= CLIENTS, run.failures
    assert b_exit == 0, procs["b"].log_text()[-3000:]
    b_log = procs["b"].log_text()
    assert "draining" in b_log and "SIGTERM" in b_log
    assert "still running after the drain" not in b_log, "B cut requests instead of draining"
    assert "Exception in ASGI application" not in b_log
