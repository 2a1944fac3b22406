"""The one Protocol every front-end API meets: a translator in and out of the internal request.

The internal request is an OpenAI chat-completions body (a dict): the needs, the planner, the
fallback loop and the providers know nothing else. A front-end turns its API's body into that
(:meth:`FrontEnd.parse`), the router's answer back into its API's body (:meth:`FrontEnd.render`)
or stream (:meth:`FrontEnd.stream`), and any gateway error into its API's error shape
(:meth:`FrontEnd.error`). The edge (:mod:`gateway.edge.endpoint`) does the rest the same way
for every API: auth, limits, needs, planning, fallback, the stream commit point, deadlines,
disconnects, shutdown, metrics and the access log. Adding an API is a new module here and one
line in the route table; it touches neither ``routing/`` nor ``providers/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import GatewayError

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Inbound:
    """One request as a front-end parsed it."""

    chat: dict[str, Any]
    """The internal request: an OpenAI chat body, routed as is."""
    stream: bool
    headers: Headers = field(default_factory=list)
    """Extra response headers the front-end adds (e.g. ``x-glm-ignored``)."""
    min_context: int | None = None
    """A context need the API expressed outside the chat body (a ``[1m]`` model suffix)."""
    state: Any = None
    """The front-end's own per-request data (the client's model name, stop sequences ...)."""


class StreamOut(Protocol):
    """One stream's translation, fed the relay's OpenAI chunk bytes."""

    def begin(self) -> bytes:
        """Sent right after the response head (Messages: ``message_start``, a ``ping``)."""
        ...

    def relay(self, chunk: bytes) -> bytes:
        """One or more whole ``data:`` events of OpenAI chunks (``[DONE]`` last) → the API's."""
        ...

    def fail(self, err: GatewayError) -> bytes:
        """The API's error event after the answer started: the stream's last bytes."""
        ...


class FrontEnd(Protocol):
    name: str
    """The API's label in metrics and the access log (``chat``, ``messages``)."""
    stream_headers: Headers
    """Content type and friends of this API's streams."""

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Inbound:
        """The internal request; raises :class:`~gateway.errors.InvalidRequest` (or another
        :class:`~gateway.errors.GatewayError`) naming what was wrong."""
        ...

    def render(self, answer: bytes, inbound: Inbound) -> bytes:
        """The router's non-streaming answer (OpenAI chat completion JSON) in this API's shape."""
        ...

    def stream(self, inbound: Inbound) -> StreamOut: ...

    def error(self, err: GatewayError, request_id: str) -> tuple[int, bytes, Headers]:
        """Status, body and extra headers of an error answer in this API's shape."""
        ...
