"""Heap trimming after large bodies: it hands freed heap back to the OS, and runs at most once
per gap however many large requests end."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys
import time

import pytest

from gateway.edge import heap

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")

FRAGMENTED = """
import os
from gateway.edge import heap

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

keep, big = [], []
for _ in range(400):  # 100 KB blocks (under the mmap threshold) pinned apart by small ones
    big.append(os.urandom(100_000))
    keep.append(os.urandom(2000))
del big
before = rss()
assert heap.trim()
print(before - rss())
"""


@glibc
def test_a_trim_hands_back_the_freed_heap() -> None:
    out = subprocess.run([sys.executable, "-c", FRAGMENTED], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # ~40 MB was freed but stays resident until trimmed
    assert int(out.stdout) > 20 * 2**20


@glibc
async def test_trims_run_at_most_once_per_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "MIN_GAP_S", 0.2)
    monkeypatch.setattr(heap, "_last", 0.0)
    monkeypatch.setattr(heap, "_pending", None)
    start = heap.trims

    async def trims_after(seconds: float) -> int:
        await asyncio.sleep(seconds)
        return heap.trims - start

    heap.after_large_body()  # the first trim starts at once, on a worker thread
    assert await trims_after(0.05) == 1
    began = time.monotonic()
    for _ in range(5):  # inside the gap: one trim, at the gap's end
        heap.after_large_body()
    assert await trims_after(0.05) == 1
    assert await trims_after(0.3) == 2
    assert heap._last - began >= 0.2 - 0.06  # it began when the gap had passed
    assert await trims_after(0.3) == 2  # nothing more was asked for
