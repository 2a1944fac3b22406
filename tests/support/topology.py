"""The replica topology as processes on this machine: gateways behind nginx, as deploy/ runs it.

:class:`Nginx` runs nginx in the foreground with its own config and logs, balancing the given
gateway ports (``proxy_next_upstream error timeout``: a replica that refuses connections is
skipped; ``proxy_buffering off``: streams pass as they come; upstream keep-alive if asked).
:func:`replica` starts one ``glm-gateway serve`` on a given port (so a restarted replica comes
back where nginx expects it); :func:`redis_replicas` starts several sharing one Redis.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e import GATEWAY_ENV, gateway_yaml, nonce
from tests.support.procs import OUT, Proc, config_copy, free_port, start_gateway

NGINX = Path("/usr/sbin/nginx")

NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format probe '$status $upstream_addr $upstream_status';
    access_log {tmp}/access.log probe;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream gateways {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground with its own config and logs in ``tmp``, in front of ``ports``."""

    def __init__(self, tmp: Path, *ports: int, keepalive: int = 0) -> None:
        """``keepalive``: idle connections nginx keeps to the replicas (its upstream
        ``keepalive``; 0: a new connection per request)."""
        servers = [f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=1s;" for p in ports]
        if keepalive:
            servers.append(f"        keepalive {keepalive};")
        port = free_port()
        text = NGINX_CONF.format(tmp=tmp, servers="\n".join(servers), port=port)
        self._start(tmp, port, text)

    @classmethod
    def with_config(cls, tmp: Path, port: int, text: str) -> Nginx:
        """nginx on a config of the caller's (listening on 127.0.0.1:``port``, logs in ``tmp``)."""
        nginx = cls.__new__(cls)
        nginx._start(tmp, port, text)
        return nginx

    def _start(self, tmp: Path, port: int, text: str) -> None:
        if not NGINX.exists():
            pytest.fail(
                f"nginx is not installed at {NGINX}: this test needs it "
                "(`apt-get install -y nginx`; tests/support/system-deps.sh installs it)"
            )
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.access_log = tmp / "access.log"
        self.error_log = tmp / "error.log"
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(text)
        self._out = (OUT / f"nginx-{port}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(NGINX), "-p", str(tmp), "-c", str(self.conf)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening")

    def lines(self) -> list[str]:
        """Access-log lines (this module's format: ``<status> <upstream addresses> <upstream
        statuses>``; a comma in the addresses means nginx tried another replica)."""
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []

    async def until_routed_to(self, port: int, after_line: int) -> None:
        """Until nginx has answered a request from the replica on ``port`` (back in rotation)."""
        for _ in range(400):
            if any(
                line.startswith("200 ") and line.split(" ")[1] == f"127.0.0.1:{port}"
                for line in self.lines()[after_line:]
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"nginx never sent a request to the replica on {port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


def replica(
    name: str, port: int, sim: Proc, cfg: Path, env: Mapping[str, str] | None = None
) -> Proc:
    """``glm-gateway serve`` on ``port`` with ``cfg``, every provider sent to ``sim``."""
    args = ["serve", "--config", str(cfg), "--port", str(port), "--simulator", sim.url]
    return Proc(name, args, port, "/healthz", {**GATEWAY_ENV, **(env or {})})


def redis_replicas(
    sim: Proc, redis_url: str, tmp: Path, *, n: int = 2, timeout_ms: int, **sections: Any
) -> list[Proc]:
    """``n`` gateways sharing the Redis at ``redis_url`` (their own key prefix, ``timeout_ms``
    for each Redis call) on a copy of the packaged config with ``sections`` changed; each
    sends every provider to ``sim``. All are stopped if one fails to start."""
    state = {"backend": "redis", "redis_timeout_ms": timeout_ms, "redis_prefix": nonce()}
    cfg = config_copy(tmp, gateway_yaml(state=state, **sections))
    env = {**GATEWAY_ENV, "GLM_GATEWAY_REDIS_URL": redis_url}
    procs: list[Proc] = []
    try:
        for _ in range(n):
            procs.append(start_gateway(sim.url, cfg, env=env))
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return procs
