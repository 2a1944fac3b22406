"""Benchmark plumbing: pinned child processes, wrk runs, CPU and RSS readings, medians.

Every load run is bounded in time (wrk ``-d``) and by a hard subprocess timeout; every child
is started by us, pinned with ``taskset``, and stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"
VENV_PY = ROOT / ".venv" / "bin" / "python"
LOAD_CORE = "0"
PROXY_CORE = "1"
_CLK = os.sysconf("SC_CLK_TCK")


def source_tree(rev: str | None) -> Path:
    """Where the gateway under test is imported from: the work tree, a directory holding a
    copy of the project, or a snapshot of git ``rev``.

    Other engineers edit the work tree while benchmarks run; ``rev`` (e.g. HEAD) pins the code
    measured: ``git archive`` into bench/out/src-<sha> (the repository is not touched).
    """
    if not rev:
        return ROOT
    if Path(rev).is_dir():
        return Path(rev).resolve()
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = OUT / f"src-{sha}"
    if not (dest / "gateway").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def config_dir(src: Path) -> Path:
    """The shipped config directory of a source tree: ``gateway/config/`` (packaged), or
    ``config/`` in a snapshot from before it moved into the package."""
    packaged = src / "gateway" / "config"
    return packaged if packaged.is_dir() else src / "config"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: str, argv: Sequence[str]) -> list[str]:
    """``argv`` under ``taskset -c core`` when taskset exists and the core is online."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > int(core.split(",")[0]):
        return ["taskset", "-c", core, *argv]
    return list(argv)


# --- /proc readings ----------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry.name))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (live ones)."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLK


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` and its descendants, MiB."""
    kib = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kib += int(line.split()[1])
        except OSError:
            continue
    return kib / 1024


# --- child processes ---------------------------------------------------------------------------


class Proc:
    """A pinned child serving HTTP on loopback; output to bench/out/<name>.log."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        core: str,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = OUT / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            pinned(core, argv),
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.ready_s: float | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 60.0) -> float:
        """Poll ``probe`` until it is true; seconds from spawn to ready. Raises on exit/timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.tail()}")
            try:
                if probe():
                    self.ready_s = time.perf_counter() - self.started
                    return self.ready_s
            except OSError:
                pass
            time.sleep(0.01)
        tail = self.tail()
        self.stop()
        raise RuntimeError(f"{self.name} not ready in {timeout:g}s: {tail}")

    def tail(self, n: int = 2000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own session: the child and its kids
            time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):  # a second one skips the drain
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def http_ok(url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None) -> bool:
    req = urllib.request.Request(url, data=body, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            r.read()
            return bool(r.status == 200)
    except OSError:
        return False


def http_json(url: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=h), timeout=5) as r:
        return json.loads(r.read())


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


# --- load --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    """One thing under load: where to send, what, and which process to charge CPU to."""

    name: str
    url: str
    body: bytes
    headers: dict[str, str]
    proc: Proc | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,'
    .. '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,'
    .. '"max":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def _lua_for(t: Target) -> Path:
    hdrs = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in t.headers.items())
    path = OUT / f"wrk-{t.name}.lua"
    path.write_text(_LUA.format(body=t.body.decode(), headers=hdrs))
    return path


def wrk(t: Target, conns: int, seconds: float) -> dict[str, Any]:
    """One wrk run (1 thread on the load core); latencies in µs, plus the target's CPU use."""
    argv = [
        "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "10s",
        "-s", str(_lua_for(t)), t.url,
    ]  # fmt: skip
    cpu0 = cpu_seconds(t.proc.pid) if t.proc else 0.0
    res = subprocess.run(
        pinned(LOAD_CORE, argv), capture_output=True, text=True, timeout=seconds + 60
    )
    cpu1 = cpu_seconds(t.proc.pid) if t.proc else 0.0
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result for {t.name}: {res.stdout}\n{res.stderr}")
    out: dict[str, Any] = json.loads(line[8:])
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    errors = sum(out[k] for k in ("connect", "read", "write", "status", "timeout"))
    out["errors"] = errors
    out["cpu_s"] = cpu1 - cpu0
    ok = max(1, out["requests"] - errors)
    out["cpu_us_per_req"] = (cpu1 - cpu0) / ok * 1e6 if t.proc else None
    return out


def ttfb(t: Target, n: int, seconds: float) -> dict[str, Any]:
    """Sequential streaming requests (bench/load.py on the load core): TTFB and total, µs."""
    spec = {"url": t.url, "headers": t.headers, "body": t.body.decode(), "n": n, "max_s": seconds}
    argv = [str(VENV_PY), str(BENCH / "load.py"), json.dumps(spec)]
    res = subprocess.run(
        pinned(LOAD_CORE, argv), capture_output=True, text=True, timeout=seconds + 60
    )
    if res.returncode != 0:
        raise RuntimeError(f"load.py failed for {t.name}: {res.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def metric_totals(url: str, name: str) -> tuple[float, float] | None:
    """(sum, count) of a Prometheus histogram over all label sets, or None if not exported."""
    try:
        text = http_text(url + "/metrics")
    except OSError:
        return None
    total = count = 0.0
    seen = False
    for line in text.splitlines():
        if line.startswith(name + "_sum"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
        elif line.startswith(name + "_count"):
            count += float(line.rsplit(" ", 1)[1])
    return (total, count) if seen else None


# --- statistics --------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def paired(a: Sequence[float], b: Sequence[float], op: Callable[[float, float], float]) -> float:
    """Median over rounds of op(b_i, a_i): each round's pair ran back to back."""
    return median([op(y, x) for x, y in zip(a, b, strict=False)])


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores ({cpu}), {int(mem) // 1024 // 1024} GiB; load average at start "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; Python processes (floor, gateway, LiteLLM) "
        f"on {interpreter()}"
    )


def interpreter() -> str:
    """The CPython build .venv runs on (version and path of the base interpreter)."""
    code = "import platform, sys; print(platform.python_version(), sys._base_executable)"
    out = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True, timeout=30)
    version, _, path = out.stdout.strip().partition(" ")
    return f"CPython {version} ({path})"
