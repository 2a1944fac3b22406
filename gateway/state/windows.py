"""Bucketed sliding windows (in-process). The Redis scripts do the same arithmetic in Lua.

A count made at ``now`` goes to bucket ``floor(now / size)``; the window holds the last ``n``
buckets. See :mod:`gateway.state.base` for the window sizes in use.
"""

from __future__ import annotations

import math


class Window:
    __slots__ = ("buckets", "n", "pruned", "size")

    def __init__(self, size: int, n: int) -> None:
        self.size = size
        self.n = n
        self.buckets: dict[int, int] = {}
        self.pruned = -(2**62)
        """The current bucket at the last prune: nothing can go stale until it changes."""

    def bucket(self, now: float) -> int:
        return math.floor(now / self.size)

    def _prune(self, now: float) -> int:
        cur = math.floor(now / self.size)
        if cur == self.pruned:  # every bucket kept then (or added since) is still in the window
            return cur
        self.pruned = cur
        stale = [b for b in self.buckets if b <= cur - self.n]
        for b in stale:
            del self.buckets[b]
        return cur

    def total(self, now: float) -> int:
        self._prune(now)
        return sum(self.buckets.values())

    def add(self, now: float, amount: int, bucket: int | None = None) -> None:
        """Count ``amount`` in ``bucket`` (default: the current one) unless it left the window."""
        cur = math.floor(now / self.size)
        if cur != self.pruned:
            self._prune(now)
        b = cur if bucket is None else bucket
        if amount == 0 or b <= cur - self.n:
            return
        self.buckets[b] = self.buckets.get(b, 0) + amount

    def room_in(self, now: float, limit: int, need: int) -> float:
        """Seconds until ``need`` more fits under ``limit``; -1 if it never can."""
        if need > limit:
            return -1.0
        used = self.total(now)
        freed = 0
        for b in sorted(self.buckets):
            freed += self.buckets[b]
            if used - freed + need <= limit:
                return (b + self.n) * self.size - now
        return 0.0

    def reset_in(self, now: float) -> float:
        """Seconds until every count in the window has left it."""
        self._prune(now)
        if not self.buckets:
            return 0.0
        return (max(self.buckets) + self.n) * self.size - now
