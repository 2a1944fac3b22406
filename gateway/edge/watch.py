"""When to start watching a request's client for going away: one loop timer for them all.

A request still running :data:`WATCH_AFTER_S` after it was planned gets a task that waits on
the ASGI ``receive`` for ``http.disconnect`` (and cancels the upstream call). Answers faster
than that, most of them behind a fast host, never pay for the task.

A loop timer per request costs as much as a tenth of the rest of the edge's work (created and
cancelled, ~5,000 instructions). Every request waits the same delay, so their due times come
in the order they were added: one queue, and one timer armed for its first live entry. Due
times are on the loop's clock, as a timer's own would be, and the timer is re-armed for the
next entry's due time, so each watch starts in the loop turn its own timer would have fired
in. A request that ends first clears its entry (nothing of it is kept until the timer passes).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("glm_gateway.edge")
WATCH_AFTER_S = 0.02
"""A request still running after this long gets a task that watches for the client going away
(and cancels the upstream call). A disconnect is still noticed within this delay."""
_EARLY_S = 0.0005
"""Due times are whole milliseconds on the loop's clock (a timer's resolution): half of one
absorbs the float error of adding the delay."""

Entry = list[Any]
"""``[due, start, *args]`` while the request runs; empty once it ended (:meth:`end`)."""


class Watches:
    """Calls ``start(*args)`` :data:`WATCH_AFTER_S` after :meth:`add`, unless the entry was
    cleared first. One per endpoint; used from one event loop at a time."""

    __slots__ = ("_delay", "_handle", "_loop", "_queue")

    def __init__(self, delay: float = WATCH_AFTER_S) -> None:
        self._delay = delay
        self._queue: deque[Entry] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, start: Callable[..., None], *args: Any) -> Entry:
        """Schedule ``start(*args)``; the entry to clear (``entry.clear()``) when the request
        ends, so that it never starts."""
        loop = asyncio.get_running_loop()
        entry = [loop.time() + self._delay, start, *args]
        if loop is not self._loop:  # a new loop (tests): the old one's timer is gone with it
            self._loop, self._handle = loop, None
            self._queue.clear()
        self._queue.append(entry)
        if self._handle is None:
            self._handle = loop.call_later(self._delay, self._fire)
        return entry

    def _fire(self) -> None:
        self._handle = None
        loop, queue = self._loop, self._queue
        assert loop is not None
        now = loop.time()
        while queue:
            entry = queue[0]
            if not entry:  # the request ended first
                queue.popleft()
                continue
            if entry[0] > now + _EARLY_S:
                self._handle = loop.call_later(entry[0] - now, self._fire)
                return
            queue.popleft()
            try:
                entry[1](*entry[2:])
            except Exception:  # one watch that cannot start must not hold up the others
                log.exception("could not start a disconnect watch")

    def pending(self) -> int:
        """Entries not yet passed by the timer, cleared ones included (for tests)."""
        return len(self._queue)
