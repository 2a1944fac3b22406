"""Counts of the answers the simulator writes progressively, and how each one ended.

SSE streams, trickles, hangs and malformed answers hold their connection while they are
written; tests read these counts (``GET /_sim/streams``) to see that a gateway let an upstream
go (``client_gone``) rather than leaving it open.
"""

from __future__ import annotations

from typing import Literal

Ending = Literal["completed", "client_gone", "cut"]


class StreamBook:
    """Opened / completed / client_gone / cut counters; ``open`` is what has not ended."""

    __slots__ = ("client_gone", "completed", "cut", "opened")

    def __init__(self) -> None:
        self.opened = 0
        self.completed = 0
        self.client_gone = 0
        """The client closed the connection (or the simulator stopped) before the end."""
        self.cut = 0
        """The simulator dropped the connection on purpose (a fault)."""

    @property
    def open(self) -> int:
        """Answers being written now."""
        return self.opened - self.completed - self.client_gone - self.cut

    def ended(self, how: Ending) -> None:
        """Count one answer's end."""
        if how == "completed":
            self.completed += 1
        elif how == "cut":
            self.cut += 1
        else:
            self.client_gone += 1

    def snapshot(self) -> dict[str, int]:
        """The counters as JSON-ready numbers."""
        return {
            "open": self.open,
            "opened": self.opened,
            "completed": self.completed,
            "client_gone": self.client_gone,
            "cut": self.cut,
        }

    def reset(self) -> None:
        """Zero every counter (answers still open will count as ended when they end)."""
        self.opened = self.open
        self.completed = self.client_gone = self.cut = 0
