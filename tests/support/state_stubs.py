"""Stand-ins for a state backend where a test needs only its health read (metrics, overview)."""

from __future__ import annotations

from gateway.state.base import Health


class OneOpen:
    """A backend that answers pings and reports one deployment's circuit open."""

    def __init__(self, target_id: str) -> None:
        self.target_id = target_id

    async def ping(self) -> bool:
        return True

    async def health(self, now: float) -> list[Health]:
        return [Health(self.target_id, "open", 5, 1, 30.0, None, 5, 5, "overloaded")]
