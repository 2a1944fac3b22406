"""The other processes of --full: nginx (static upstream), Portkey, LiteLLM proxy, Redis.

Each ``start_*`` returns a running, pinned process (or raises with what failed). Portkey and
LiteLLM come from bench/setup.sh's bench-only environments.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from harness import (
    BENCH,
    LOAD_CORE,
    OUT,
    PROXY_CORE,
    Proc,
    Target,
    free_port,
    http_ok,
)

NGINX_DIR = BENCH / "nginx"
PORTKEY = BENCH / ".portkey" / "node_modules" / "@portkey-ai" / "gateway"
LITELLM = BENCH / ".venv-litellm" / "bin" / "litellm"
LITELLM_KEY = "sk-bench-litellm-master-0123456789abcdef"
"""The proxy refuses to start without a master key (1.108+); no database: checked in memory."""


def _nginx_bin() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        raise RuntimeError("nginx not installed: run bash bench/setup.sh")
    return found


def start_nginx() -> tuple[Proc, dict[str, int]]:
    """nginx on the load core: one port answers a static completion, one a 50-chunk stream."""
    prefix = OUT / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    ports = {"json": free_port(), "sse": free_port()}
    conf = (NGINX_DIR / "nginx.conf.tmpl").read_text()
    conf = conf.replace("@PREFIX@", str(prefix)).replace("@JSON_PORT@", str(ports["json"]))
    conf = conf.replace("@SSE_PORT@", str(ports["sse"]))
    conf = conf.replace("@STATIC@", str(NGINX_DIR))
    (prefix / "nginx.conf").write_text(conf)
    proc = Proc(
        "nginx",
        [_nginx_bin(), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
        core=LOAD_CORE,
    )
    for port in ports.values():
        proc.wait_ready(lambda p=port: http_ok(f"http://127.0.0.1:{p}/v1/chat/completions"))  # type: ignore[misc]
    return proc, ports


def start_portkey(upstream: str, body: bytes) -> Target:
    """Portkey's open-source gateway (Node), provider openai with a custom host = upstream."""
    pkg = PORTKEY / "package.json"
    if not pkg.exists():
        raise RuntimeError("Portkey not installed: run bash bench/setup.sh")
    version = json.loads(pkg.read_text())["version"]
    hono = BENCH / ".portkey" / "node_modules" / "@hono" / "node-server" / "package.json"
    hono_v = json.loads(hono.read_text())["version"] if hono.exists() else "?"
    port = free_port()
    proc = Proc(
        f"portkey-{port}",
        ["node", str(PORTKEY / "build" / "start-server.js"), f"--port={port}", "--headless"],
        core=PROXY_CORE,
        env={"NODE_ENV": "production"},
    )
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer sk-bench",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": upstream + "/v1",
    }
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    proc.wait_ready(lambda: http_ok(url, body, headers), timeout=60)
    return Target(
        "portkey", url, body, headers, proc, note=f"@portkey-ai/gateway {version}, "
        f"@hono/node-server {hono_v}, node {_version(['node', '-v'])}"
    )  # fmt: skip


def start_litellm(upstream: str, body: bytes) -> Target:
    """LiteLLM proxy, 1 worker, one model ``openai/glm-4.7-flash`` at api_base = upstream."""
    if not LITELLM.exists():
        raise RuntimeError("LiteLLM proxy not installed: run bash bench/setup.sh")
    py = LITELLM.parent / "python"
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    version = _version([str(py), "-c", probe])
    base = _version([str(py), "-c", "import sys; print(sys._base_executable)"])
    port = free_port()
    cfg = OUT / f"litellm-{port}.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: glm-4.7-flash\n"
        "    litellm_params:\n"
        "      model: openai/glm-4.7-flash\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-bench\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    proc = Proc(
        f"litellm-{port}",
        [
            str(LITELLM),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        core=PROXY_CORE,
        env={
            "LITELLM_LOG": "ERROR",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "DISABLE_SCHEMA_UPDATE": "True",
        },
    )
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {LITELLM_KEY}"}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    proc.wait_ready(lambda: http_ok(url, body, headers), timeout=180)
    note = f"litellm[proxy] {version}, 1 worker, on {base}"
    return Target("litellm", url, body, headers, proc, note=note)


def start_redis() -> tuple[Proc, str]:
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError("redis-server not installed")
    port = free_port()
    proc = Proc(
        "redis",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        core=LOAD_CORE,
    )
    url = f"redis://127.0.0.1:{port}/0"
    proc.wait_ready(lambda: isinstance(redis_commands(url), dict))
    return proc, url


def redis_commands(url: str) -> dict[str, int]:
    """Calls per command so far (INFO commandstats; commands run inside scripts included)."""
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    res = subprocess.run(
        ["redis-cli", "-h", host, "-p", port, "INFO", "commandstats"],
        capture_output=True,
        text=True,
        timeout=5,
    )
    if res.returncode != 0 or "# Commandstats" not in res.stdout:
        raise OSError("redis not answering")
    out: dict[str, int] = {}
    for line in res.stdout.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[8:].partition(":")
            out[name] = int(rest.split(",", 1)[0].split("=", 1)[1])
    return out


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return "?"
