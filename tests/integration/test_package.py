"""The gateway as a user installs it: a wheel built from the checkout, installed into a fresh
venv (its dependencies pinned and hash-checked by requirements/lock.txt as constraints), run
from a directory outside the checkout with no config and no provider keys.

Time: ~15 s for the module once pip's cache holds the locked wheels (first run on a machine:
~1 min more to download them).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.procs import ROOT, Proc, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KEYS_UNSET = {
    name: ""
    for name in (
        "ZAI_API_KEY", "BIGMODEL_API_KEY", "OPENROUTER_API_KEY", "TOGETHER_API_KEY",
        "FIREWORKS_API_KEY", "DEEPINFRA_API_KEY", "NOVITA_API_KEY", "SILICONFLOW_API_KEY",
        "AWS_ACCESS_KEY_ID", "GLM_GATEWAY_CONFIG_DIR", "GLM_GATEWAY_REDIS_URL",
        "GLM_GATEWAY_MASTER_KEY", "PYTHONPATH",
    )
}  # fmt: skip
"""Empty means unset to the gateway: no keys, no config dir, nothing from the checkout."""
TOKENS_OFF = "EXACT PROMPT TOKEN COUNTING IS OFF"


@dataclass(frozen=True)
class Install:
    venv: Path
    home: Path
    """A directory outside the checkout: every command runs here."""

    @property
    def cli(self) -> str:
        return str(self.venv / "bin" / "glm-gateway")

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *args],
            cwd=self.home,
            env={**os.environ, **KEYS_UNSET},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def serve(self, *args: str) -> Proc:
        port = free_port()
        return Proc(
            "wheel-gateway",
            ["serve", "--port", str(port), *args],
            port,
            "/healthz",
            KEYS_UNSET,
            command=[self.cli],
            cwd=self.home,
        )


def _pip(venv: Path, *args: str, timeout: float = 600) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "-q", *args],
        check=True,
        timeout=timeout,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # only what the wheel is built from: no build/ left in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "gateway", src / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(dist), str(src)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("glm_gateway-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(venv, "install", "--require-hashes", "--no-deps", "-r", str(ROOT / "requirements/pip.txt"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    req = root / "wheel.txt"
    req.write_text(f"glm-gateway @ {wheel.as_uri()} --hash=sha256:{digest}\n")
    _pip(
        venv,
        "install",
        "--require-hashes",
        "-r",
        str(req),
        "-c",
        str(ROOT / "requirements/lock.txt"),
    )
    home = root / "home"
    home.mkdir()
    yield Install(venv, home)


def test_the_wheel_carries_no_checkout_and_no_litellm(installed: Install) -> None:
    code = "import gateway, importlib.util as u; print(gateway.__file__, u.find_spec('litellm'))"
    out = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", code],
        cwd=installed.home, capture_output=True, text=True, check=True, timeout=60,
        env={**os.environ, **KEYS_UNSET},
    ).stdout.split()  # fmt: skip
    assert out[0].startswith(str(installed.venv)) and out[1] == "None"


def test_demo_answers_the_openai_sdk(installed: Install) -> None:
    gw = installed.serve("--demo")
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="anything", max_retries=0)
        answer = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], timeout=30
        )
        assert answer.choices[0].message.content and answer.model.startswith("glm-")
        ready = httpx.get(gw.url + "/readyz", timeout=30).json()
        assert ready["config"]["dir"].startswith(str(installed.venv))  # the packaged config
        assert ready["config"]["variants"] == 16 and ready["prompt_tokens"] == "cl100k"
        # Exact counting in a plain install: ~140k English tokens counted as such (the byte
        # bound would say ~5x more).
        text = " ".join(["routing", "gateway", "the", "context", "window", "fits"] * 23_000)
        counted = _count_tokens(gw.url, text)
        assert 137_000 < counted < 140_000, counted
    finally:
        gw.stop()
    assert TOKENS_OFF not in gw.log_text()


def _count_tokens(url: str, text: str) -> int:
    r = httpx.post(
        url + "/v1/messages/count_tokens",
        headers={"anthropic-version": "2023-06-01", "x-api-key": "anything"},
        json={"model": "glm-4.7", "messages": [{"role": "user", "content": text}]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return int(r.json()["input_tokens"])


def test_serve_without_config_or_keys_starts_on_the_packaged_config(installed: Install) -> None:
    gw = installed.serve()
    try:
        ready = httpx.get(gw.url + "/readyz", timeout=30).json()
        assert ready["status"] == "ready" and ready["config"]["dir"].startswith(str(installed.venv))
        assert ready["config"]["skipped_deployments"] > 0
    finally:
        gw.stop()
    log = gw.log_text()
    assert "ZAI_API_KEY is not set" in log and TOKENS_OFF not in log


def test_init_then_check_config_names_file_and_line(installed: Install) -> None:
    conf = installed.home / "conf"
    made = installed.run("init", str(conf))
    assert made.returncode == 0, made.stderr
    assert f"glm-gateway serve --config {conf}" in made.stdout
    ok = installed.run("check-config", str(conf))
    assert ok.returncode == 0 and ok.stdout.startswith(f"config OK: {conf}"), ok.stderr
    again = installed.run("init", str(conf))
    assert again.returncode == 1 and "--force" in again.stderr

    gateway_yaml = conf / "gateway.yaml"
    gateway_yaml.write_text(gateway_yaml.read_text() + "\nshipping: yes\n")
    n = len(gateway_yaml.read_text().splitlines())
    models = conf / "models.yaml"
    lines = models.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if "context:" in line)
    lines[i] = lines[i].replace("context:", "context: lots #", 1)
    models.write_text("\n".join(lines) + "\n")
    bad = installed.run("check-config", str(conf))
    assert bad.returncode == 1, bad.stdout
    assert f"{gateway_yaml}:{n}: shipping: unknown key 'shipping'" in bad.stderr
    assert f"{models}:{i + 1}: variants[0].context: " in bad.stderr


def test_python_m_gateway_is_the_cli(installed: Install) -> None:
    out = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-m", "gateway", "--help"],
        cwd=installed.home, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    for command in ("serve", "init", "check-config", "route", "catalog", "simulate", "keys"):
        assert command in out


def test_zz_without_tiktoken_serve_warns_loudly(installed: Install) -> None:
    """Last in the module: it removes tiktoken from the venv (an install made with --no-deps)."""
    _pip(installed.venv, "uninstall", "-y", "tiktoken")
    gw = installed.serve("--demo")
    try:
        ready = httpx.get(gw.url + "/readyz", timeout=30).json()
        assert ready["prompt_tokens"] == "byte_bound"
        assert _count_tokens(gw.url, "hello world " * 1000) >= 12_000  # the byte bound
    finally:
        gw.stop()
    log = gw.log_text()
    assert TOKENS_OFF in log and "the tiktoken package is not installed" in log
