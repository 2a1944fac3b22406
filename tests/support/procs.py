"""Real servers for tests: the simulator and the gateway as child processes on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "gateway" / "config"
OUT = ROOT / "tests" / "out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process serving HTTP on 127.0.0.1:port; stderr goes to tests/out/<name>.log.

    ``command`` runs the CLI (default: this interpreter's ``-m gateway.cli``), in ``cwd``.
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        port: int,
        health: str,
        env: Mapping[str, str] | None = None,
        *,
        command: Sequence[str] = (sys.executable, "-m", "gateway.cli"),
        cwd: Path = ROOT,
    ) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = OUT / f"{name}-{port}.log"
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=cwd,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait(health)

    def _wait(self, health: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + health, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not come up: {self.log_path.read_text()[-2000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            # A gateway drains on SIGTERM (server.shutdown_grace_s first); a second SIGTERM
            # skips the grace and the drain. Tests that check the drain signal it themselves.
            self.proc.terminate()
            time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def start_simulator(config_dir: Path = CONFIG) -> Proc:
    port = free_port()
    return Proc(
        "sim", ["simulate", "--config", str(config_dir), "--port", str(port)], port, "/_sim/healthz"
    )


def start_gateway(
    sim_url: str | None,
    config_dir: Path = CONFIG,
    env: Mapping[str, str] | None = None,
    extra: list[str] | None = None,
) -> Proc:
    port = free_port()
    args = ["serve", "--config", str(config_dir), "--port", str(port)]
    if sim_url:
        args += ["--simulator", sim_url]
    return Proc("gateway", args + (extra or []), port, "/healthz", env)


def config_copy(tmp: Path, gateway_yaml: str | None = None) -> Path:
    """A copy of the shipped config directory with gateway.yaml replaced."""
    dest = tmp / "config"
    shutil.copytree(CONFIG, dest)
    if gateway_yaml is not None:
        (dest / "gateway.yaml").write_text(gateway_yaml)
    return dest
