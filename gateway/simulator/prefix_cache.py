"""A per-deployment prompt cache, as hosts keep one: a prefix hits only where it was seen.

Each deployment (provider + model id) remembers the prefixes (whole leading messages) of the
prompts it served, each for ``ttl_s`` after it was last sent. A request's cached tokens are the
share of its prompt covered by the longest such prefix: the same session on the same deployment
within the TTL hits, on another deployment (or later) it does not. Read and cleared at
``/_sim/cache``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson

DEFAULT_TTL_S = 300.0
MAX_ENTRIES = 200_000


class PrefixCache:
    """Prefix hashes per deployment, each with when it lapses, and hit counts."""

    def __init__(
        self, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._seen: dict[bytes, float] = {}
        self.prompt_tokens = 0
        self.cached_tokens = 0

    def serve(self, deployment: str, messages: Any, prompt_tokens: int) -> int:
        """Cached tokens of this prompt on ``deployment``; remembers its prefixes."""
        if not isinstance(messages, list) or not messages or prompt_tokens <= 0:
            return 0
        now = self._clock()
        h = hashlib.blake2b(deployment.encode(), digest_size=16)
        sizes: list[int] = []
        digests: list[bytes] = []
        for m in messages:
            raw = orjson.dumps(m)
            h.update(raw)
            sizes.append(len(raw))
            digests.append(h.copy().digest())
        hit = 0
        for i, d in enumerate(digests):
            until = self._seen.get(d)
            if until is None or until <= now:
                break
            hit = i + 1
        self._remember(digests, now)
        cached = prompt_tokens * sum(sizes[:hit]) // max(1, sum(sizes)) if hit else 0
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached
        return cached

    def _remember(self, digests: list[bytes], now: float) -> None:
        if len(self._seen) + len(digests) > MAX_ENTRIES:
            self._seen = {d: u for d, u in self._seen.items() if u > now}
            if len(self._seen) + len(digests) > MAX_ENTRIES:
                self._seen.clear()
        until = now + self.ttl_s
        for d in digests:
            self._seen[d] = until

    def stats(self) -> dict[str, Any]:
        ratio = self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None
        return {
            "ttl_s": self.ttl_s,
            "prefixes": len(self._seen),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "hit_ratio": ratio,
        }

    def clear(self, ttl_s: float | None = None) -> None:
        """Forget every prefix and count (and set a new TTL when given)."""
        self._seen.clear()
        self.prompt_tokens = self.cached_tokens = 0
        if ttl_s is not None:
            self.ttl_s = ttl_s
