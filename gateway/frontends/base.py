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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from gateway.catalogue.target import Target
from gateway.errors import GatewayError

Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Final[Headers] = [(b"content-type", b"application/json")]
SSE_HEADERS: Final[Headers] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def sse_data(event: bytes) -> Any:
    """The JSON of one ``data:`` event (an ``event:`` line may come first), or None."""
    at = event.find(b"data:")
    if at < 0:
        return None
    payload = event[at + 5 :].strip()
    if not payload or payload == b"[DONE]":
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


_CLAUDE_SESSION = re.compile(r"_session_([0-9A-Za-z-]{8,})")


def body_session(body: dict[str, Any]) -> str | None:
    """A session id an OpenAI-style body carries: ``prompt_cache_key`` (Codex), else ``user``."""
    value = body.get("prompt_cache_key")
    if isinstance(value, str) and value:
        return value
    value = body.get("user")
    return value if isinstance(value, str) and value else None


def claude_session(body: dict[str, Any]) -> str | None:
    """Claude Code's session in ``metadata.user_id`` (``user_<h>_account_<a>_session_<uuid>``,
    or a JSON object with ``session_id``); None when it names no session (a user is not one)."""
    meta = body.get("metadata")
    user = meta.get("user_id") if isinstance(meta, dict) else None
    if not isinstance(user, str) or not user:
        return None
    if user.startswith("{"):
        try:
            obj = orjson.loads(user)
        except orjson.JSONDecodeError:
            return None
        sid = obj.get("session_id") if isinstance(obj, dict) else None
        return sid if isinstance(sid, str) and sid else None
    found = _CLAUDE_SESSION.search(user)
    return found.group(1) if found else None


def is_done(event: bytes) -> bool:
    return event.strip() == b"data: [DONE]"


class NativeCall(Protocol):
    """A request that a host speaking the client's API natively takes as sent.

    The router tries each candidate in plan order as always; for a deployment this call
    :meth:`serves` it sends :meth:`body` to :meth:`url` (with :attr:`headers`) instead of the
    translated chat body, and the answer goes back to the client untranslated.
    """

    api: str
    """The API spoken natively (``messages``), named in ``X-GLM-Adapted``."""

    @property
    def headers(self) -> Mapping[str, str]:
        """Client headers the host's API needs (checked values only: ``anthropic-version``)."""
        ...

    def serves(self, target: Target) -> bool: ...

    def url(self, target: Target) -> str: ...

    def body(self, target: Target) -> dict[str, Any]:
        """The client's body for ``target`` (its model id set)."""
        ...

    def accept(self, raw: bytes) -> tuple[bytes, dict[str, int]] | str:
        """A 2xx non-streaming answer: the body and its usage as ``prompt_tokens`` /
        ``completion_tokens``, or why it is not an answer."""
        ...

    def commits(self, event: Any) -> bool:
        """A parsed stream event that carries answer content (the commit point)."""
        ...

    def ends(self, event: bytes) -> bool:
        """The raw stream event that ends the answer (the API's ``[DONE]``)."""
        ...

    def usage(self, event: Any) -> dict[str, int] | None:
        """Usage a parsed stream event reports (``prompt_tokens`` / ``completion_tokens``)."""
        ...

    def failed(self, event: Any) -> str | None:
        """A parsed stream event that ends the answer as a failure: the host's own finish
        reason for it (``network_error``), else None."""
        ...


@dataclass(slots=True)
class Inbound:
    """One request as a front-end parsed it."""

    chat: dict[str, Any]
    """The internal request: an OpenAI chat body, routed as is."""
    stream: bool
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Extra response headers the front-end adds (e.g. ``x-glm-ignored``); the edge makes
    the values header-safe."""
    min_context: int | None = None
    """A context need the API expressed outside the chat body (a ``[1m]`` model suffix)."""
    state: Any = None
    """The front-end's own per-request data (the client's model name, stop sequences ...)."""
    native: NativeCall | None = None
    """Set when some hosts speak this API natively: the router may send the body as is."""
    native_headers: list[tuple[str, str]] | None = None
    """``headers`` for an answer a host gave natively (what translation ignores, it got)."""
    session: str | None = None
    """The agent's session id as this API's body carries it (Claude Code's ``metadata.user_id``
    session, ``prompt_cache_key``, ``user``), for session affinity; raw, hashed by routing."""


_new: Final = object.__new__


def plain_inbound(chat: dict[str, Any], stream: bool, session: str | None) -> Inbound:
    """``Inbound(chat, stream, session=session)``, built slot by slot (a dataclass call costs
    ~1k instructions more: the type call and its keyword-capable ``__init__``)."""
    inbound: Inbound = _new(Inbound)
    inbound.chat = chat
    inbound.stream = stream
    inbound.headers = []
    inbound.min_context = None
    inbound.state = None
    inbound.native = None
    inbound.native_headers = None
    inbound.session = session
    return inbound


class StreamOut(Protocol):
    """One stream's translation, fed the relay's OpenAI chunk bytes."""

    takes_objects: bool
    """Prefer :meth:`relay_parts` (the relay's parsed objects, no re-parse of its bytes)."""

    def begin(self) -> bytes:
        """Sent right after the response head (Messages: ``message_start``, a ``ping``)."""
        ...

    def relay(self, chunk: bytes) -> bytes:
        """One or more whole ``data:`` events of OpenAI chunks (``[DONE]`` last) → the API's."""
        ...

    def relay_parts(self, parts: list[bytes], objs: list[Any]) -> bytes:
        """:meth:`relay` for events given one by one, each with the OpenAI chunk it encodes
        (``None``: parse the bytes)."""
        ...

    def fail(self, err: GatewayError) -> bytes:
        """The API's error event after the answer started: the stream's last bytes."""
        ...


class FrontEnd(Protocol):
    name: str
    """The API's label in metrics and the access log (``chat``, ``messages``)."""
    stream_headers: Headers
    """Content type and friends of this API's streams."""
    renders_objects: bool
    """:meth:`render` takes the router's answer object (no encode and re-parse between)."""

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Inbound:
        """The internal request; raises :class:`~gateway.errors.InvalidRequest` (or another
        :class:`~gateway.errors.GatewayError`) naming what was wrong."""
        ...

    def render(
        self, answer: bytes | dict[str, Any], inbound: Inbound, native: bool = False
    ) -> bytes:
        """The router's non-streaming answer in this API's shape: an OpenAI chat completion
        (its bytes, or its object when :attr:`renders_objects`), or (``native``) the host's
        own answer in this API as bytes, to pass on."""
        ...

    def stream(self, inbound: Inbound, native: bool = False) -> StreamOut:
        """A stream's translation (``native``: the host's events are already this API's)."""
        ...

    def error(self, err: GatewayError, request_id: str) -> tuple[int, bytes, Headers]:
        """Status, body and extra headers of an error answer in this API's shape."""
        ...
