"""deploy/compose/nginx.conf run by a real nginx in front of two real gateway replicas.

The compose file runs nginx 1.27 (image) where upstream servers are re-resolved through Docker's
DNS (`zone`, `resolve`, `resolver`); Debian's nginx here is 1.22, which predates `resolve`, and
there is no Docker DNS. So exactly those lines are taken out, the service names become the
replicas' loopback ports and logs and temp files go to a temporary folder; every other directive
is nginx's to parse and apply. Each substitution must match, so a changed nginx.conf fails here
rather than being tested in a form it no longer has.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.deploy.compose_file import COMPOSE_DIR
from tests.deploy.k8s import CONFIG_SOURCE
from tests.support.e2e import GATEWAY_ENV, MASTER_KEY
from tests.support.procs import Proc, free_port, start_gateway, start_simulator
from tests.support.topology import NGINX, Nginx

pytestmark = pytest.mark.slow


def adapted(tmp: Path, a: int, b: int, port: int) -> str:
    """The compose nginx.conf with Docker-only parts replaced (module docstring)."""
    text = (COMPOSE_DIR / "nginx.conf").read_text()
    subs = [
        ("worker_processes auto;",
         f"worker_processes 1;\ndaemon off;\nuser root;\npid {tmp}/nginx.pid;"),
        ("error_log /dev/stderr warn;", f"error_log {tmp}/error.log warn;"),
        ("    access_log /dev/stdout;\n",
         "    log_format probe '$status $upstream_addr';\n"
         f"    access_log {tmp}/access.log probe;\n"
         + "".join(f"    {k}_temp_path {tmp}/{k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))),
        ("    resolver 127.0.0.11 valid=5s ipv6=off;\n", ""),
        ("        zone gateways 64k;\n", ""),
        ("server gateway-1:8080 max_fails=1 fail_timeout=2s resolve;",
         f"server 127.0.0.1:{a} max_fails=1 fail_timeout=2s;"),
        ("server gateway-2:8080 max_fails=1 fail_timeout=2s resolve;",
         f"server 127.0.0.1:{b} max_fails=1 fail_timeout=2s;"),
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
    ]  # fmt: skip
    for old, new in subs:
        assert text.count(old) == 1, f"nginx.conf changed: {old!r} is not there once"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nginx, Proc, Proc]]:
    sim = start_simulator(CONFIG_SOURCE)
    a = start_gateway(sim.url, CONFIG_SOURCE, GATEWAY_ENV)
    b = start_gateway(sim.url, CONFIG_SOURCE, GATEWAY_ENV)
    tmp, port = tmp_path_factory.mktemp("nginx"), free_port()
    nginx = Nginx.with_config(tmp, port, adapted(tmp, a.port, b.port, port))
    yield nginx, a, b
    nginx.stop()
    for proc in (a, b, sim):
        proc.stop()


def test_nginx_accepts_the_compose_config(stack: tuple[Nginx, Proc, Proc]) -> None:
    nginx = stack[0]
    run = subprocess.run(
        [str(NGINX), "-t", "-p", str(nginx.conf.parent), "-c", str(nginx.conf)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr


async def test_both_replicas_answer_through_it_streams_included(
    stack: tuple[Nginx, Proc, Proc],
) -> None:
    nginx, a, b = stack
    client = openai.AsyncOpenAI(base_url=nginx.url + "/v1", api_key=MASTER_KEY, max_retries=0,
                                timeout=30)  # fmt: skip
    async with client:
        for i in range(4):
            messages: list[dict[str, str]] = [{"role": "user", "content": f"hello {i}"}]
            r = await client.chat.completions.create(model="auto", messages=messages)  # type: ignore[arg-type]
            assert r.choices[0].message.content
            stream = await client.chat.completions.create(
                model="auto",
                messages=messages,
                stream=True,  # type: ignore[arg-type]
            )
            chunks = [c async for c in stream]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices]
            assert text and finish[-1] == "stop"
    upstreams = {line.split()[1] for line in nginx.lines() if line.startswith("200 ")}
    assert upstreams == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
