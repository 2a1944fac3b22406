"""``glm-gateway serve`` on a port another process holds: one clear line and exit 2, never a
banner that says it is running followed by a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.support.procs import ROOT


def test_a_taken_port_is_one_clear_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--demo", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 2
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert lines == [
        f"glm-gateway: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another process listens there: stop it or pick --port)"
    ], run.stderr


def test_a_no_capable_variant_log_line_names_the_unmet_need(gateway: object) -> None:
    import httpx

    from tests.support.e2e import AUTH, nonce, wait_log_for
    from tests.support.procs import Proc

    assert isinstance(gateway, Proc)
    rid = "req-" + nonce()
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        headers={**AUTH, "X-Request-Id": rid, "X-GLM-Capabilities": "vision,code_execution",
                 "X-GLM-Params": "<=1B"},
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_capable_variant"
    rec = wait_log_for(gateway, rid)
    assert rec["error"] == "no_capable_variant"
    assert rec["unmet"] == r.json()["error"]["unmet"] and rec["unmet"]
