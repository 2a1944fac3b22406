"""Real coding agents through a real gateway: Claude Code and the Vercel AI SDK (tests/agents).

A gateway of its own on the shipped config, every provider sent to the simulator, auth on with
the master key. Each client is given only the gateway's base URL and the key (Claude Code also
the switches that keep it from reaching anything else, and a fresh HOME). The simulator's
``tool_call`` directive makes the first answer call exactly one tool; after the tool result it
answers text, so each agent loop is: call, run the tool locally, send the result, answer.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agents import (
    ROOT,
    connects,
    installed,
    package_version,
    run_ai_sdk,
    run_claude,
)
from tests.support.anthropic_recorder import Recorder
from tests.support.e2e import (
    MASTER_KEY,
    api_records,
    directive,
    module_gateway,
    nonce,
    sim_requests,
)
from tests.support.procs import Proc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not installed(), reason="agent clients missing: bash tests/agents/install.sh"
    ),
]

BASH_CALL = {"name": "Bash", "arguments": {"command": "echo hi", "description": "Print hi"}}
WEATHER_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


@pytest.fixture(scope="module")
def agent_gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(simulator, tmp_path_factory.mktemp("agents")) as proc:
        yield proc


def new_records(
    gateway: Proc, since: int, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Access-log records written after the first ``since``, once ``until`` holds for them.

    The gateway writes a stream's line when the stream ends, which may be just after the client
    read its last byte: wait for the lines (up to 30 s), then return what is there.
    """
    end = time.monotonic() + 30
    while True:
        recs = api_records(gateway)[since:]
        if until(recs) or time.monotonic() > end:
            return recs
        time.sleep(0.1)


def _tool_result_in(body: Any, text: str) -> bool:
    """Whether an upstream body carries a tool result containing ``text`` (chat or Messages)."""
    for msg in body.get("messages") or []:
        if msg.get("role") == "tool" and text in json.dumps(msg.get("content")):
            return True
        content = msg.get("content")
        if isinstance(content, list):
            for block in content:
                if (
                    isinstance(block, dict)
                    and block.get("type") == "tool_result"
                    and text in json.dumps(block.get("content"))
                ):
                    return True
    return False


def _diagnose(run: Any, gateway: Proc) -> str:
    return f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr[-3000:]}\n" + (
        "gateway log tail:\n" + gateway.log_text()[-3000:]
    )


def _answered(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in recs if r.get("api") == "messages" and r["status"] == 200]


def test_claude_code_runs_a_bash_tool_through_the_gateway(
    agent_gateway: Proc, simulator: Proc, tmp_path: Path
) -> None:
    tag = nonce()
    prompt = (
        f"Run the command and tell me what it printed. {directive({'tool_call': BASH_CALL}, tag)}"
    )
    since = len(api_records(agent_gateway))
    run = run_claude(
        ["-p", "--allowedTools", "Bash", "--", prompt], agent_gateway.url, MASTER_KEY, tmp_path
    )
    assert run.returncode == 0, _diagnose(run, agent_gateway)
    assert "Hello from glm-" in run.stdout, _diagnose(run, agent_gateway)

    # The tool call, then the answer after the tool result: two messages requests answered 200.
    recs = new_records(agent_gateway, since, lambda r: len(_answered(r)) >= 2)
    ok = _answered(recs)
    assert len(ok) == 2, recs
    assert all(r["variant"].startswith("glm-") for r in ok), recs

    upstream = [q["body"] for q in sim_requests(simulator, tag) if isinstance(q.get("body"), dict)]
    assert len(upstream) >= 2, upstream
    assert not _tool_result_in(upstream[0], "hi")
    assert _tool_result_in(upstream[-1], "hi"), upstream[-1].get("messages")


def test_claude_code_first_request_is_accepted(agent_gateway: Proc, tmp_path: Path) -> None:
    """Every request of a Claude Code session is answered 200: none is refused and retried."""
    reply = f"first try {nonce()}"
    prompt = f"say hi {directive({'content': reply}, nonce())}"
    since = len(api_records(agent_gateway))
    run = run_claude(["-p", prompt], agent_gateway.url, MASTER_KEY, tmp_path)
    assert run.returncode == 0 and reply in run.stdout, _diagnose(run, agent_gateway)
    recs = new_records(agent_gateway, since, lambda r: len(_answered(r)) >= 1)
    assert [(r["api"], r["status"]) for r in recs] == [("messages", 200)], recs


@pytest.mark.parametrize(
    ("args", "env", "variant"),
    [
        pytest.param([], {}, None, id="no-model-configured"),
        pytest.param(["--model", "sonnet"], {}, None, id="sonnet"),
        pytest.param(["--model", "haiku"], {}, None, id="haiku"),
        pytest.param([], {"ANTHROPIC_MODEL": "glm-4.7"}, "glm-4.7", id="ANTHROPIC_MODEL"),
        pytest.param(
            ["--model", "haiku"],
            {"ANTHROPIC_DEFAULT_HAIKU_MODEL": "glm-4.6v"},
            "glm-4.6v",
            id="ANTHROPIC_DEFAULT_HAIKU_MODEL",
        ),
    ],
)
def test_claude_code_model_names(
    agent_gateway: Proc,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    variant: str | None,
) -> None:
    """Claude Code's own names (``claude-opus-*``, ``claude-sonnet-*``, ``claude-haiku-*``) are
    mapped by the gateway; a GLM id set through its env vars is routed as that variant."""
    reply = f"hi from the gateway {nonce()}"
    prompt = f"say hi {directive({'content': reply}, nonce())}"
    since = len(api_records(agent_gateway))
    run = run_claude(["-p", *args, prompt], agent_gateway.url, MASTER_KEY, tmp_path, env)
    assert run.returncode == 0, _diagnose(run, agent_gateway)
    assert reply in run.stdout, _diagnose(run, agent_gateway)
    ok = _answered(new_records(agent_gateway, since, lambda r: len(_answered(r)) >= 1))
    assert len(ok) == 1, ok
    if variant is not None:
        assert ok[0]["variant"] == variant, ok


def test_claude_code_model_discovery_reads_an_anthropic_model_list(
    agent_gateway: Proc, tmp_path: Path
) -> None:
    """With gateway model discovery on, Claude Code first sends ``GET /v1/models?limit=1000``
    with ``anthropic-version``; the gateway's Anthropic-shaped list must pass its check."""
    r = httpx.get(
        agent_gateway.url + "/v1/models?limit=1000",
        headers={"Authorization": f"Bearer {MASTER_KEY}", "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body.get("data"), list) and body["data"], body
    for key in ("has_more", "first_id", "last_id"):
        assert key in body, body
    for m in body["data"]:
        assert m["type"] == "model" and m["id"] and "display_name" in m and "created_at" in m, m

    reply = f"hi after discovery {nonce()}"
    prompt = f"say hi {directive({'content': reply}, nonce())}"
    env = {"CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1"}
    debug = tmp_path / "debug.log"
    args = ["-p", "--debug-file", str(debug), prompt]
    run = run_claude(args, agent_gateway.url, MASTER_KEY, tmp_path / "home", env)
    assert run.returncode == 0, _diagnose(run, agent_gateway)
    assert reply in run.stdout, _diagnose(run, agent_gateway)
    # Claude Code keeps only ids matching /(claude|anthropic)/i; "cached N models" means the
    # list passed its schema and offered at least one (else: "response body failed
    # validation", "non-OK status", "0 usable models after filter").
    lines = [ln for ln in debug.read_text().splitlines() if "[gatewayDiscovery]" in ln]
    assert any("[gatewayDiscovery] cached" in ln for ln in lines), lines


@pytest.mark.parametrize("model", ["glm-4.7", "claude-sonnet-4-5"])
def test_ai_sdk_generate_and_stream_with_a_tool(
    agent_gateway: Proc, simulator: Proc, model: str
) -> None:
    tag = nonce()
    prompt = f"What is the weather in Paris? {directive({'tool_call': WEATHER_CALL}, tag)}"
    run = run_ai_sdk(agent_gateway.url + "/v1", MASTER_KEY, model, prompt)
    assert run.returncode == 0, _diagnose(run, agent_gateway)
    out = json.loads(run.stdout)
    for mode in ("generate", "stream"):
        res = out[mode]
        assert res["toolCalls"] == [{"toolName": "get_weather", "input": {"city": "Paris"}}], res
        assert res["toolResults"][0]["output"] == {"city": "Paris", "temperature_c": 21}, res
        assert res["steps"] == 2 and res["finishReason"] == "stop", res
        assert "Hello from glm-" in res["text"], res
    assert out["stream"]["streamed"] == out["stream"]["text"]
    assert out["stream"]["errors"] == []
    upstream = [q["body"] for q in sim_requests(simulator, tag) if isinstance(q.get("body"), dict)]
    assert sum(_tool_result_in(b, "temperature_c") for b in upstream) >= 2, upstream


@pytest.mark.skipif(
    shutil.which("strace") is None, reason="strace missing: tests/support/system-deps.sh"
)
def test_claude_code_connects_to_nothing_but_the_base_url(tmp_path: Path) -> None:
    """With the no-traffic switches, every socket Claude Code opens goes to ANTHROPIC_BASE_URL:
    no DNS lookup, no telemetry, no update check (a recording server stands in for the gateway)."""
    trace = tmp_path / "connect.trace"
    with Recorder() as rec:
        run = run_claude(["-p", "say hi"], rec.url, "x", tmp_path / "home", strace_to=trace)
        seen = [(q["method"], q["path"].split("?")[0]) for q in rec.requests]
    assert run.returncode == 0, run
    assert "hi from the recorder" in run.stdout
    assert connects(trace, rec.port) == ["127.0.0.1:<recorder>"]
    assert seen == [("POST", "/v1/messages")]


def test_captures_are_of_the_pinned_versions() -> None:
    """tests/data/agents/ holds a capture of each pinned client version: bumping a pin in
    tests/agents/package.json needs a new capture (python tests/agents/capture.py)."""
    data = ROOT / "tests" / "data" / "agents"
    for name, prefix in (
        ("@anthropic-ai/claude-code", "claude-code"),
        ("@ai-sdk/anthropic", "ai-sdk-anthropic"),
    ):
        path = data / f"{prefix}-{package_version(name)}.json"
        assert path.exists(), (
            f"no capture for {name} {package_version(name)}: run tests/agents/capture.py"
        )
        runs = json.loads(path.read_text())["runs"]
        assert runs and all(r["exit_code"] == 0 and r["requests"] for r in runs), path
