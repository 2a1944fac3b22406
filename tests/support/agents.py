"""The pinned Node clients of tests/agents (Claude Code, Codex CLI, the AI SDK) and how tests
run them."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "tests" / "agents"
MODULES = AGENTS / "node_modules"
CLAUDE = MODULES / ".bin" / "claude"
CODEX = MODULES / ".bin" / "codex"
AI_SDK_SCRIPT = AGENTS / "ai_sdk.mjs"
AI_SDK_OPENAI_SCRIPT = AGENTS / "ai_sdk_openai.mjs"

NO_TRAFFIC_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}
"""Keeps Claude Code from reaching anything but ANTHROPIC_BASE_URL (checked with strace in
tests/agents/capture.py: with these set, its only connect() is to the base URL)."""


CODEX_NO_TRAFFIC = """check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

[features]
plugins = false
remote_plugin = false
apps = false
"""
"""Keeps Codex from reaching anything but the provider's base URL (checked with strace in
tests/agents/capture.py). Without ``[features] plugins = false`` it runs ``git ls-remote
https://github.com/openai/plugins.git`` at every start (the curated plugin sync)."""


def codex_config(base_url: str, model: str = "glm-4.7", extra: str = "") -> str:
    """A ``CODEX_HOME/config.toml`` with the gateway as a custom Responses provider ``glm``
    (``base_url`` ends in ``/v1``; the key is read from ``GLM_KEY``), plus the no-traffic
    switches. ``extra`` is top-level TOML (it goes before every table)."""
    return f"""model = "{model}"
model_provider = "glm"
{extra}{CODEX_NO_TRAFFIC}
[model_providers.glm]
name = "GLM gateway"
base_url = "{base_url}"
env_key = "GLM_KEY"
wire_api = "responses"
"""


def package_version(name: str) -> str:
    """The installed version of a package in tests/agents/node_modules."""
    data = json.loads((MODULES / name / "package.json").read_text())
    return str(data["version"])


def connects(trace: Path, port: int) -> list[str]:
    """Every distinct connect() destination in an ``strace -e trace=connect`` log, in order:
    ``ip:port`` (``port`` shown as ``<recorder>``) or ``unix:<path>``."""
    seen: list[str] = []
    for line in trace.read_text().splitlines():
        if "connect(" not in line:
            continue
        m = re.search(
            r'sin6?_port=htons\((\d+)\).*?(?:inet_addr|inet_pton\(AF_INET6, )\("?([^")]+)', line
        )
        u = re.search(r'sun_path="([^"]+)"', line)
        if m:
            p = "<recorder>" if int(m.group(1)) == port else m.group(1)
            dest = f"{m.group(2)}:{p}"
        elif u:
            dest = "unix:" + u.group(1)
        else:
            continue
        if dest not in seen:
            seen.append(dest)
    return seen


def installed() -> bool:
    return CLAUDE.exists() and (MODULES / "ai" / "package.json").exists()


def codex_installed() -> bool:
    return CODEX.exists() and (MODULES / "@ai-sdk" / "openai" / "package.json").exists()


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_claude(
    args: list[str],
    base_url: str,
    token: str,
    home: Path,
    extra_env: dict[str, str] | None = None,
    strace_to: Path | None = None,
) -> Run:
    """``claude <args>`` given only the base URL and token (plus the no-traffic switches).

    HOME and CLAUDE_CONFIG_DIR are ``home`` (a fresh temp dir), the working directory is
    ``home/work``; nothing of the caller's environment but PATH is passed on. With
    ``strace_to``, runs under ``strace -f -e trace=connect`` writing there (see :func:`connects`).
    """
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": token,
        **NO_TRAFFIC_ENV,
        **(extra_env or {}),
    }
    trace = (
        ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(strace_to)] if strace_to else []
    )
    p = subprocess.run(
        [*trace, str(CLAUDE), *args],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def run_codex(
    args: list[str],
    base_url: str,
    token: str,
    home: Path,
    config: str | None = None,
    strace_to: Path | None = None,
) -> Run:
    """``codex <args>`` with ``CODEX_HOME=home/.codex`` holding ``config`` (default:
    :func:`codex_config` for ``base_url``) and the key in ``GLM_KEY``.

    HOME is ``home`` (a fresh temp dir), the working directory ``home/work``; nothing of the
    caller's environment but PATH is passed on. ``strace_to`` as for :func:`run_claude`.
    """
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        config if config is not None else codex_config(base_url)
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        "GLM_KEY": token,
    }
    trace = (
        ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(strace_to)] if strace_to else []
    )
    p = subprocess.run(
        [*trace, str(CODEX), *args],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def run_ai_sdk(
    base_url: str, api_key: str, model: str, prompt: str, script: Path = AI_SDK_SCRIPT
) -> Run:
    """tests/agents/ai_sdk.mjs (or ``script``, e.g. :data:`AI_SDK_OPENAI_SCRIPT`):
    generateText and streamText, each with one tool round trip."""
    p = subprocess.run(
        ["node", str(script), base_url, model, prompt],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AI_SDK_API_KEY": api_key},
        cwd=AGENTS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Run(p.returncode, p.stdout, p.stderr)
