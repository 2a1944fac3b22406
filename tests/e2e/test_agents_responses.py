"""Real Responses clients through a real gateway: Codex CLI and the AI SDK's OpenAI provider.

The sibling of tests/e2e/test_agents.py for ``POST /v1/responses``: a gateway of its own on the
shipped config, every provider sent to the simulator, auth on with the master key. Codex gets a
fresh HOME and CODEX_HOME whose config.toml names the gateway as a custom provider
(``wire_api = "responses"``, tests/support/agents.py ``codex_config``); the AI SDK gets the base
URL and the key. The simulator's ``tool_call`` directive makes the first answer call one tool;
after the tool result it answers text.

The gateway serves them through its Responses front-end (`/v1/responses`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import (
    AI_SDK_OPENAI_SCRIPT,
    ROOT,
    codex_config,
    codex_installed,
    connects,
    package_version,
    run_ai_sdk,
    run_codex,
)
from tests.support.e2e import (
    MASTER_KEY,
    api_records,
    directive,
    module_gateway,
    nonce,
    sim_requests,
)
from tests.support.procs import Proc
from tests.support.responses_recorder import Recorder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not codex_installed(), reason="agent clients missing: bash tests/agents/install.sh"
    ),
]

EXEC_CALL = {"name": "exec_command", "arguments": {"cmd": "echo hi-from-codex"}}
WEATHER_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}
# Fail fast instead of Codex's default five retries per request and per stream.
NO_RETRIES = "request_max_retries = 0\nstream_max_retries = 0\n"
CODEX_EXEC = ["exec", "--skip-git-repo-check", "--sandbox", "danger-full-access"]


@pytest.fixture(scope="module")
def agent_gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with module_gateway(simulator, tmp_path_factory.mktemp("agents-responses")) as proc:
        yield proc


def gateway_config(gateway: Proc) -> str:
    """config.toml for the gateway, with the provider's retries off."""
    text = codex_config(gateway.url + "/v1")
    return text.replace('wire_api = "responses"\n', f'wire_api = "responses"\n{NO_RETRIES}')


def _diagnose(run: Any, gateway: Proc) -> str:
    return f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr[-3000:]}\n" + (
        "gateway log tail:\n" + gateway.log_text()[-3000:]
    )


def _tool_result_in(body: Any, text: str) -> bool:
    """Whether an upstream chat body carries a ``tool`` message containing ``text``."""
    return any(
        m.get("role") == "tool" and text in json.dumps(m.get("content"))
        for m in body.get("messages") or []
        if isinstance(m, dict)
    )


def test_codex_exec_runs_a_shell_tool_through_the_gateway(
    agent_gateway: Proc, simulator: Proc, tmp_path: Path
) -> None:
    tag = nonce()
    prompt = (
        f"Run the command and tell me what it printed. {directive({'tool_call': EXEC_CALL}, tag)}"
    )
    since = len(api_records(agent_gateway))
    run = run_codex(
        [*CODEX_EXEC, prompt],
        agent_gateway.url + "/v1",
        MASTER_KEY,
        tmp_path,
        config=gateway_config(agent_gateway),
    )
    assert run.returncode == 0, _diagnose(run, agent_gateway)
    assert "Hello from glm-" in run.stdout, _diagnose(run, agent_gateway)

    ok = [r for r in api_records(agent_gateway)[since:] if r["status"] == 200]
    assert len(ok) >= 2, ok
    assert all(r["variant"].startswith("glm-") for r in ok), ok

    upstream = [q["body"] for q in sim_requests(simulator, tag) if isinstance(q.get("body"), dict)]
    assert len(upstream) >= 2, upstream
    assert not _tool_result_in(upstream[0], "hi-from-codex")
    assert _tool_result_in(upstream[-1], "hi-from-codex"), upstream[-1].get("messages")


def test_codex_first_request_is_accepted(agent_gateway: Proc, tmp_path: Path) -> None:
    """A plain Codex turn (its ~40 KB body: developer messages, 8 function tools, a
    ``namespace`` tool, ``web_search``, ``reasoning``, ``include``, ``store: false``) is
    answered 200 at once: no refusal, no retry."""
    reply = f"first try {nonce()}"
    prompt = f"say hi {directive({'content': reply}, nonce())}"
    since = len(api_records(agent_gateway))
    run = run_codex(
        ["exec", "--skip-git-repo-check", prompt],
        agent_gateway.url + "/v1",
        MASTER_KEY,
        tmp_path,
        config=gateway_config(agent_gateway),
    )
    assert run.returncode == 0 and reply in run.stdout, _diagnose(run, agent_gateway)
    assert [r["status"] for r in api_records(agent_gateway)[since:]] == [200]


def test_ai_sdk_openai_generate_and_stream_with_a_tool(
    agent_gateway: Proc, simulator: Proc
) -> None:
    """``openai('glm-4.7')`` is the AI SDK's Responses model: generateText (JSON) and
    streamText (SSE), each a tool call, the local tool, then the answer."""
    tag = nonce()
    prompt = f"What is the weather in Paris? {directive({'tool_call': WEATHER_CALL}, tag)}"
    run = run_ai_sdk(
        agent_gateway.url + "/v1", MASTER_KEY, "glm-4.7", prompt, script=AI_SDK_OPENAI_SCRIPT
    )
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
def test_codex_connects_to_nothing_but_the_base_url(tmp_path: Path) -> None:
    """With tests/support/agents.py's no-traffic config (update check, analytics, feedback,
    OTel and plugins off), every network socket Codex opens goes to the provider's base URL
    (a recording server stands in for the gateway). Local unix sockets (nscd) are allowed."""
    trace = tmp_path / "connect.trace"
    with Recorder() as rec:
        run = run_codex(
            ["exec", "--skip-git-repo-check", "say hi"],
            rec.url + "/v1",
            "x",
            tmp_path / "home",
            strace_to=trace,
        )
        seen = [(q["method"], q["path"]) for q in rec.requests]
    assert run.returncode == 0, run
    assert "hi from the recorder" in run.stdout
    assert [c for c in connects(trace, rec.port) if not c.startswith("unix:")] == [
        "127.0.0.1:<recorder>"
    ]
    assert seen == [("POST", "/v1/responses")]


def test_responses_captures_are_of_the_pinned_versions() -> None:
    """tests/data/agents/ holds a capture of each pinned Responses client: bumping a pin in
    tests/agents/package.json needs a new capture (python tests/agents/capture.py codex)."""
    data = ROOT / "tests" / "data" / "agents"
    for name, prefix in (("@openai/codex", "codex"), ("@ai-sdk/openai", "ai-sdk-openai")):
        path = data / f"{prefix}-{package_version(name)}.json"
        assert path.exists(), (
            f"no capture for {name} {package_version(name)}: run tests/agents/capture.py codex"
        )
        runs = json.loads(path.read_text())["runs"]
        assert runs and all(r["exit_code"] == 0 and r["requests"] for r in runs), path
