"""Helpers for the chaos modules: the simulator's admin API, /metrics, and /proc readings."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tests.support.e2e import AUTH
from tests.support.procs import Proc

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


async def set_faults(sim: Proc, rules: list[dict[str, Any]], seed: int | None = None) -> None:
    """Replace the simulator's global fault rules (``seed`` restarts its ``rate`` RNG)."""
    params = {"seed": str(seed)} if seed is not None else {}
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(sim.url + "/_sim/faults", json=rules, params=params)
        r.raise_for_status()


async def clear_faults(sim: Proc) -> None:
    async with httpx.AsyncClient(timeout=30) as c:
        (await c.delete(sim.url + "/_sim/faults")).raise_for_status()


async def sim_streams(sim: Proc) -> dict[str, int]:
    """The simulator's progressive-answer counters (open, opened, completed, client_gone, cut)."""
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(sim.url + "/_sim/streams")
        r.raise_for_status()
        out: dict[str, int] = r.json()
        return out


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m is None or line.startswith("#"):
            continue
        labels = dict(_LABEL.findall(m[2] or ""))
        out.append((m[1], labels, float(m[3])))
    return out


async def scrape(gw: Proc) -> list[tuple[str, dict[str, str], float]]:
    async with httpx.AsyncClient(timeout=30, headers=AUTH) as c:
        r = await c.get(gw.url + "/metrics")
        r.raise_for_status()
        return parse_metrics(r.text)


def metric(
    samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str
) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels`` (None: no such sample)."""
    hits = [
        v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())
    ]
    return sum(hits) if hits else None


def fd_counts(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets) of a process, from /proc."""
    total = sockets = 0
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue  # closed while we looked
        total += 1
        sockets += target.startswith("socket:")
    return total, sockets


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def poll_until(
    probe: Callable[[], Awaitable[bool]], within_s: float, every_s: float = 0.1
) -> bool:
    """Call ``probe`` until it is true or ``within_s`` passed; the last answer."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if await probe():
            return True
        await asyncio.sleep(every_s)
    return await probe()
