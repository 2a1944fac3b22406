"""Capture what the pinned clients send: Claude Code, Codex CLI and the AI SDK against a
recording server.

    .venv/bin/python tests/agents/capture.py [claude|codex ...]   (after tests/agents/install.sh)

Writes tests/data/agents/claude-code-<version>.json, ai-sdk-anthropic-<version>.json,
codex-<version>.json and ai-sdk-openai-<version>.json: every request (method, path and query,
headers, JSON body) of each run, sanitized (token, key, session, thread and installation ids,
temp paths, ports), with each run's argv, environment (Codex: its config.toml), exit code and
output. For Claude Code and Codex, when ``strace`` is installed, also every socket each run
connected to. The recorders (tests/support/anthropic_recorder.py, responses_recorder.py) answer
minimal valid Anthropic / Responses answers. With arguments, only those groups are captured.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import responses_recorder  # noqa: E402
from tests.support.agents import (  # noqa: E402
    AGENTS,
    AI_SDK_OPENAI_SCRIPT,
    CLAUDE,
    CODEX,
    CODEX_NO_TRAFFIC,
    NO_TRAFFIC_ENV,
    codex_config,
    connects,
    package_version,
)
from tests.support.anthropic_recorder import Recorder  # noqa: E402

OUT = ROOT / "tests" / "data" / "agents"
TOKEN = "capture-token-x"
BASH_CALL = '<<rec:{"name":"Bash","input":{"command":"echo hi","description":"Print hi"}}>>'
WEATHER_CALL = '<<rec:{"name":"get_weather","input":{"city":"Paris"}}>>'
EXEC_CALL = '<<rec:{"name":"exec_command","arguments":{"cmd":"echo hi"}}>>'
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

CLAUDE_RUNS: list[dict[str, Any]] = [
    {"name": "say-hi", "args": ["-p", "say hi"], "env": {}},
    {
        "name": "bash-tool",
        "args": ["-p", "--allowedTools", "Bash", "--", f"Run the command. {BASH_CALL}"],
        "env": {},
    },
    {
        "name": "model-discovery",
        "args": ["-p", "say hi"],
        "env": {"CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1"},
    },
    {
        "name": "default-traffic",
        "args": ["-p", "say hi"],
        "env": {},
        "drop": [
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "DISABLE_TELEMETRY",
            "DISABLE_ERROR_REPORTING",
        ],
    },
]


CODEX_RUNS: list[dict[str, Any]] = [
    {"name": "say-hi", "args": ["exec", "--skip-git-repo-check", "say hi"], "extra": ""},
    {
        "name": "exec-command-tool",
        "args": [
            "exec",
            "--skip-git-repo-check",
            "--sandbox",
            "danger-full-access",
            f"Run the command. {EXEC_CALL}",
        ],
        "extra": "",
    },
    {
        # A small window and compaction limit: after the tool call's answer (whose usage is
        # over the limit) Codex compacts the history before it sends the tool result.
        "name": "compact",
        "args": [
            "exec",
            "--skip-git-repo-check",
            "--sandbox",
            "danger-full-access",
            f"Run the command. {EXEC_CALL}",
        ],
        "extra": "model_context_window = 16000\nmodel_auto_compact_token_limit = 2000\n",
    },
    {
        # Without the no-traffic switches (shows what they prevent).
        "name": "default-traffic",
        "args": ["exec", "--skip-git-repo-check", "say hi"],
        "extra": "",
        "no_switches": True,
    },
]


def sanitize(obj: Any, replacements: dict[str, str]) -> Any:
    text = json.dumps(obj)
    for old, new in replacements.items():
        text = text.replace(old, new)
    text = re.sub(r'\\"device_id\\":\\"[0-9a-f]+\\"', r'\\"device_id\\":\\"<device-id>\\"', text)
    # Claude Code names a project directory after the working directory, "/" and "_" as "-".
    text = re.sub(r"-tmp-cc-home-[A-Za-z0-9_-]*?-work", "-home-user-work", text)
    text = UUID.sub("<uuid>", text)
    return json.loads(text)


def clean_headers(headers: list[list[str]]) -> list[list[str]]:
    out = []
    for k, v in headers:
        low = k.lower()
        if low == "content-length":
            continue
        if low == "authorization":
            v = "Bearer <token>"
        elif low == "x-api-key":
            v = "<key>"
        out.append([k, v])
    return out


def run_claude(run: dict[str, Any]) -> dict[str, Any]:
    with Recorder() as rec, tempfile.TemporaryDirectory(prefix="cc-home-") as home:
        work = Path(home) / "work"
        work.mkdir()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": home,
            "CLAUDE_CONFIG_DIR": f"{home}/.claude",
            "ANTHROPIC_BASE_URL": rec.url,
            "ANTHROPIC_AUTH_TOKEN": TOKEN,
            **NO_TRAFFIC_ENV,
            **run["env"],
        }
        for name in run.get("drop", []):
            env.pop(name, None)
        trace = Path(home) / "strace.txt"
        prefix = (
            ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace)]
            if shutil.which("strace")
            else []
        )
        proc = subprocess.run(
            [*prefix, str(CLAUDE), *run["args"]],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        reps = {
            home: "/home/user",
            TOKEN: "<token>",
            f"127.0.0.1:{rec.port}": "127.0.0.1:<port>",
        }
        shown_env = {k: v for k, v in env.items() if k != "PATH"}
        return sanitize(
            {
                "name": run["name"],
                "argv": ["claude", *run["args"]],
                "env": shown_env,
                "exit_code": proc.returncode,
                "stdout": proc.stdout,
                "stderr": proc.stderr[-2000:],
                "connects": connects(trace, rec.port) if prefix else None,
                "requests": [{**r, "headers": clean_headers(r["headers"])} for r in rec.requests],
            },
            reps,
        )


def run_ai_sdk() -> dict[str, Any]:
    with Recorder() as rec:
        args = [
            rec.url + "/v1",
            "claude-sonnet-4-5",
            f"What is the weather in Paris? {WEATHER_CALL}",
        ]
        proc = subprocess.run(
            ["node", str(AGENTS / "ai_sdk.mjs"), *args],
            env={**os.environ, "AI_SDK_API_KEY": TOKEN},
            cwd=AGENTS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        reps = {TOKEN: "<key>", f"127.0.0.1:{rec.port}": "127.0.0.1:<port>"}
        return sanitize(
            {
                "name": "generateText-then-streamText",
                "argv": ["node", "tests/agents/ai_sdk.mjs", *args],
                "exit_code": proc.returncode,
                "stdout": json.loads(proc.stdout) if proc.returncode == 0 else proc.stdout,
                "stderr": proc.stderr[-2000:],
                "requests": [{**r, "headers": clean_headers(r["headers"])} for r in rec.requests],
            },
            reps,
        )


def run_codex(run: dict[str, Any]) -> dict[str, Any]:
    with responses_recorder.Recorder() as rec, tempfile.TemporaryDirectory(prefix="cx-") as home:
        work = Path(home) / "work"
        work.mkdir()
        codex_home = Path(home) / ".codex"
        codex_home.mkdir()
        config = codex_config(rec.url + "/v1", extra=run["extra"])
        if run.get("no_switches"):
            config = config.replace(CODEX_NO_TRAFFIC, "")
        (codex_home / "config.toml").write_text(config)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": home,
            "CODEX_HOME": str(codex_home),
            "GLM_KEY": TOKEN,
        }
        trace = Path(home) / "strace.txt"
        prefix = (
            ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace)]
            if shutil.which("strace")
            else []
        )
        proc = subprocess.run(
            [*prefix, str(CODEX), *run["args"]],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        reps = {
            home: "/home/user",
            TOKEN: "<token>",
            f"127.0.0.1:{rec.port}": "127.0.0.1:<port>",
        }
        shown_env = {k: v for k, v in env.items() if k != "PATH"}
        return sanitize(
            {
                "name": run["name"],
                "argv": ["codex", *run["args"]],
                "env": shown_env,
                "config_toml": config,
                "exit_code": proc.returncode,
                "stdout": proc.stdout,
                "stderr": proc.stderr[-2000:],
                "connects": connects(trace, rec.port) if prefix else None,
                "requests": [{**r, "headers": clean_headers(r["headers"])} for r in rec.requests],
            },
            reps,
        )


def run_ai_sdk_openai() -> dict[str, Any]:
    with responses_recorder.Recorder() as rec:
        call = '<<rec:{"name":"get_weather","arguments":{"city":"Paris"}}>>'
        args = [rec.url + "/v1", "glm-4.7", f"What is the weather in Paris? {call}"]
        proc = subprocess.run(
            ["node", str(AI_SDK_OPENAI_SCRIPT), *args],
            env={**os.environ, "AI_SDK_API_KEY": TOKEN},
            cwd=AGENTS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        reps = {TOKEN: "<key>", f"127.0.0.1:{rec.port}": "127.0.0.1:<port>"}
        return sanitize(
            {
                "name": "generateText-then-streamText",
                "argv": ["node", "tests/agents/ai_sdk_openai.mjs", *args],
                "exit_code": proc.returncode,
                "stdout": json.loads(proc.stdout) if proc.returncode == 0 else proc.stdout,
                "stderr": proc.stderr[-2000:],
                "requests": [{**r, "headers": clean_headers(r["headers"])} for r in rec.requests],
            },
            reps,
        )


def write(name: str, data: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


def main() -> None:
    groups = set(sys.argv[1:]) or {"claude", "codex"}
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    if "claude" in groups:
        capture_claude(node)
    if "codex" in groups:
        capture_codex(node)


def capture_codex(node: str) -> None:
    cx = package_version("@openai/codex")
    write(
        f"codex-{cx}.json",
        {
            "client": "@openai/codex",
            "version": cx,
            "recorder": "tests/support/responses_recorder.py",
            "runs": [run_codex(r) for r in CODEX_RUNS],
        },
    )
    sdk = package_version("@ai-sdk/openai")
    write(
        f"ai-sdk-openai-{sdk}.json",
        {
            "client": "@ai-sdk/openai",
            "version": sdk,
            "ai": package_version("ai"),
            "node": node,
            "recorder": "tests/support/responses_recorder.py",
            "runs": [run_ai_sdk_openai()],
        },
    )


def capture_claude(node: str) -> None:
    cc = package_version("@anthropic-ai/claude-code")
    write(
        f"claude-code-{cc}.json",
        {
            "client": "@anthropic-ai/claude-code",
            "version": cc,
            "recorder": "tests/support/anthropic_recorder.py",
            "runs": [run_claude(r) for r in CLAUDE_RUNS],
        },
    )
    sdk = package_version("@ai-sdk/anthropic")
    write(
        f"ai-sdk-anthropic-{sdk}.json",
        {
            "client": "@ai-sdk/anthropic",
            "version": sdk,
            "ai": package_version("ai"),
            "node": node,
            "recorder": "tests/support/anthropic_recorder.py",
            "runs": [run_ai_sdk()],
        },
    )


if __name__ == "__main__":
    main()
