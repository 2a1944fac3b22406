"""Session affinity: the requests of one agent session go to one deployment.

Coding agents send the same long prefix on every turn; a host's prompt cache only hits when the
same deployment saw that prefix a moment ago. So a session is pinned: the first deployment that
answers it is remembered in shared state (every replica sees it) for the provider's cache
lifetime, and later requests of the session try it first, as long as the plan holds it (every
need met, circuit not open: eligibility is never widened to keep a pin). A pin moves only when
the pinned deployment failed in a way that implicates the host (429, 5xx, network, its circuit
open), never on the caller's fault; each move is logged and counted. The pin is read by the
request's one ``StateStore.before`` call (``Ticket.session``), which also takes the request's
reservation and in-flight slot on the pinned deployment when it goes first. It is written
after the answer is out, sent with the ``after`` call (the two share a pipeline: no round
trip of its own, none before the answer; a client's next turn takes longer than that write),
only when it is new and the plan had a choice, moves, or is past half its TTL.

The session key: ``X-GLM-Session``, else what the agents send (``x-claude-code-session-id``,
``x-codex-window-id``, or the front-end's body field: Claude Code's ``metadata.user_id``
session, ``prompt_cache_key``, ``user``), else a hash of the stable prefix of the prompt (the
system messages and the first ``prefix_messages`` after them). Every key is hashed before it is
stored or logged: neither a session id nor prompt text leaves in a Redis key or a log line.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.catalogue.schema import AffinityConfig
from gateway.catalogue.target import Target
from gateway.errors import InvalidRequest
from gateway.observability.metrics import Metrics
from gateway.routing import failures as fl
from gateway.state.base import Pin, StateStore, View

log = logging.getLogger("glm_gateway.affinity")

SESSION_HEADER = "x-glm-session"
AGENT_HEADERS = ("x-claude-code-session-id", "x-codex-window-id")
"""Session ids agents send on every request of one conversation, in the order they count."""
_SESSION_VALUE = re.compile(r"^[\x21-\x7e]{1,256}$")
_NOT_THE_HOSTS_FAULT = frozenset(
    {
        fl.FailureClass.CALLER,
        fl.FailureClass.CONTENT_FILTER,
        fl.FailureClass.CONTEXT,
        fl.FailureClass.SCHEMA,
    }
)
_SYSTEM_ROLES = frozenset({"system", "developer"})
PREFIX_SAMPLE = 512
"""Bytes of a long prompt prefix's head and of its tail that go into its session key whole."""
DIGESTS_KEPT = 1024
"""Session keys remembered by what they hash (at most ~1 KB each: :func:`_stable_prefix`)."""


def pinnable(targets: Sequence[Target], reach: int) -> tuple[str, ...]:
    """The deployments among the first ``reach`` that a pin may put first: those serving the
    variant the plan put first. A pin chooses among the hosts of the policy's choice (a prompt
    cache is per model anyway), never over the policy's choice of variant."""
    if len(targets) < 2:
        return ()
    variant = targets[0].variant.id
    return tuple([t.id for t in targets[:reach] if t.variant.id == variant])


def put_first(targets: list[Target], pin: Pin | None, movable: Sequence[str], view: View) -> bool:
    """Move the pinned deployment to the front of ``targets`` exactly when shared state did
    (``StateStore.before``: listed in ``movable``, its circuit not open, not at its limit),
    so the request goes where its reservation and in-flight slot were taken. True: it is first.
    """
    if pin is None:
        return False
    tid = pin.target_id
    if tid not in movable or tid in view.open_circuits or tid in view.saturated:
        return bool(targets) and targets[0].id == tid
    for i, t in enumerate(targets):
        if t.id == tid:
            if i:
                targets.insert(0, targets.pop(i))
            return True
    return False


@functools.lru_cache(maxsize=DIGESTS_KEPT)
def _digest(kind: str, data: bytes) -> str:
    """``kind`` + the hex of a 16-byte blake2b of ``data``. Remembered: a session sends the same
    id or prefix on every turn, and a blake2b object made, fed and read (~6,500 instructions)
    costs ~10x a lookup of the bytes; the key is the same string either way."""
    return kind + hashlib.blake2b(data, digest_size=16).hexdigest()


def session_key(
    headers: Mapping[str, str], body_session: str | None, chat: dict[str, Any], prefix: int
) -> str:
    """The hashed session key of a request (see the module doc for the order of sources).

    Raises InvalidRequest naming ``X-GLM-Session`` when that header is malformed.
    """
    explicit = headers.get(SESSION_HEADER)
    if explicit is not None:
        if not _SESSION_VALUE.match(explicit):
            raise InvalidRequest(
                "X-GLM-Session must be 1-256 visible ASCII characters (no spaces), "
                f"got {len(explicit)} character(s) that are not.",
                param="X-GLM-Session",
                code="invalid_header",
            )
        return _digest("h", explicit.encode())
    for name in AGENT_HEADERS:
        value = headers.get(name)
        if value:
            return _digest("a", value.encode())
    if body_session:
        return _digest("b", body_session.encode())
    return _digest("p", _stable_prefix(chat, prefix))


def _stable_prefix(chat: dict[str, Any], after_system: int) -> bytes:
    """The system messages and the first ``after_system`` messages after them, as bytes: in
    full when short, else what keys them as well for a fraction of the hashing (an agent's
    prefix is ~20 KB; blake2b over all of it cost ~30 µs a request): its head and tail, its
    length and its CRC-32 (zlib's, several GB/s), which every byte changes."""
    messages = chat.get("messages")
    if not isinstance(messages, list):
        return b""
    end = 0
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in _SYSTEM_ROLES:
            break
        end += 1
    data = orjson.dumps(messages[: end + after_system])
    if len(data) <= 2 * PREFIX_SAMPLE:
        return data
    check = zlib.crc32(data).to_bytes(4, "big") + len(data).to_bytes(8, "big")
    return data[:PREFIX_SAMPLE] + data[-PREFIX_SAMPLE:] + check


@dataclass(slots=True)
class Pinned:
    """One request's session and what shared state said about it."""

    session: str
    pin: Pin | None
    front: bool = False
    """The pinned deployment was moved to the front of the plan (it was eligible)."""
    known: bool = True
    """False: shared state was not read (late or down); a missing pin is then unknown."""
    choice: bool = True
    """The plan offered two or more deployments a pin could choose among (else a new session
    is not pinned: its pin could not move anything)."""


class Affinity:
    """Reads a session's pin before the attempts, and (re)pins after the answer."""

    def __init__(
        self,
        config: AffinityConfig,
        state: StateStore,
        metrics: Metrics | None = None,
        *,
        blocked: Callable[[float], frozenset[str]] = lambda _now: frozenset(),
        known: Mapping[str, str] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = config
        self._ttl_s = config.ttl_s
        self._provider_ttl_s = config.provider_ttl_s
        """``config``'s, read once (a pydantic read costs several times a slot's)."""
        self._state = state
        self._metrics = metrics
        self._blocked = blocked
        """Deployments this replica last saw with an open circuit or at their limit."""
        self._known: Mapping[str, str] = known or {}
        """Every configured deployment -> its provider (a pin to one that is gone moves)."""
        self._wall = wall
        self._outcomes = (
            {o: metrics.affinity.labels(o) for o in ("new", "pinned", "repinned", "elsewhere")}
            if metrics is not None
            else {}
        )

    @property
    def prefix_messages(self) -> int:
        return self._cfg.prefix_messages

    async def settle(self, pinned: Pinned, target: Target | None, attempts: Sequence[Any]) -> None:
        """After the answer: pin a new session, keep (refresh) a pin that held, move one whose
        deployment failed for the host's reasons; leave it when this request could not use it.
        ``attempts``: the router's, in order (each with ``target`` and ``failure`` or None)."""
        write = self.decide(pinned, target, attempts)
        if write is not None:
            await self._state.set_pin(*write)

    def decide(
        self, pinned: Pinned, target: Target | None, attempts: Sequence[Any]
    ) -> tuple[str, str, float, float] | None:
        """What :meth:`settle` does, counted and logged: the ``set_pin`` arguments to write, or
        None when the pin stays as it is (the caller sends the write with its other state call,
        :meth:`Router.record`: one round trip)."""
        if target is None:
            return None
        pin, now = pinned.pin, self._wall()
        ttl = self._provider_ttl_s.get(target.provider, self._ttl_s)
        if pin is None:
            if not pinned.known:  # it may have a pin this replica could not see: keep that one
                return None
            self._count("new")
            if not pinned.choice:  # nothing to choose among: a pin could never move anything
                return None
            return pinned.session, target.id, ttl, now
        if pin.target_id == target.id:
            pinned_series = self._outcomes.get("pinned")  # self._count, without its call
            if pinned_series is not None:
                pinned_series.inc()
            if pin.until - now < ttl / 2:  # refreshed at most twice per TTL, not every turn
                return pinned.session, target.id, ttl, now
            return None
        reason = self._why_moved(pinned, attempts, now)
        if reason is None:
            self._count("elsewhere")  # this request could not use it; the pin stays
            return None
        self._count("repinned")
        if self._metrics is not None:
            provider = self._known.get(pin.target_id, "gone")
            self._metrics.affinity_repins.labels(provider, reason).inc()
        log.info(
            "session %s re-pinned from %s to %s (%s)",
            pinned.session[:12],
            pin.target_id,
            target.id,
            reason,
        )
        return pinned.session, target.id, ttl, now

    def _why_moved(self, pinned: Pinned, attempts: Sequence[Any], now: float) -> str | None:
        """Why the pin should move to another deployment, or None when it must stay."""
        pin = pinned.pin
        assert pin is not None
        if pinned.front:
            for a in attempts:
                failure = a.failure
                if a.target.id == pin.target_id and isinstance(failure, fl.Failure):
                    if failure.cls in _NOT_THE_HOSTS_FAULT:
                        return None
                    return failure.cls.value
            return None
        if pin.target_id in self._blocked(now):
            return "circuit_open"
        if self._known and pin.target_id not in self._known:
            return "gone"
        return None

    def _count(self, outcome: str) -> None:
        series = self._outcomes.get(outcome)
        if series is not None:
            series.inc()
