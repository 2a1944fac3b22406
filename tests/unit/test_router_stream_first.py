"""``Router.open_stream``'s first attempt, made without the walk, is the walk's first attempt.

The same scripted upstream answers both ways (``first_inline`` on and off): what the caller
gets (the stream's opening, or the error), every attempt and outcome recorded, what was sent
with which timeout, the backoffs and how often the clock was read must all be the same.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.loader import load_config
from gateway.catalogue.target import Target
from gateway.edge.relay import _rewriter
from gateway.errors import GatewayError
from gateway.providers.base import UpstreamConnectionError, UpstreamResponse, UpstreamTimeout
from gateway.providers.dialects import client_wants_usage, model_rewriter
from gateway.routing.planner import Plan
from gateway.routing.router import Router, RouteState
from gateway.state.memory import MemoryState
from tests.support.procs import CONFIG

CONF = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")
TARGETS = CONF.catalogue.targets

SSE = {"Content-Type": "text/event-stream"}
OPENING = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
)
# What one upstream attempt gets: a stream that commits, one that fails before its first token,
# an error status, a 2xx that is no stream, or no answer at all.
replies = st.sampled_from(
    [
        ("stream", SSE, [OPENING, b"data: [DONE]\n\n"]),
        ("stream", {}, [OPENING[:50], OPENING[50:]]),
        ("stream", SSE, [b'data: {"error": {"code": "1302", "message": "busy"}}\n\n']),
        ("stream", SSE, [b'data: {"choices":[{"delta":{},"finish_reason":"network_error"}]}\n\n']),
        ("stream", SSE, [b"data: [DONE]\n\n"]),
        ("stream", SSE, []),
        ("stream", SSE, [b"data: <html>\n\n"]),
        ("stream", {"Content-Type": "application/json"}, [b'{"error": {"message": "no"}}']),
        ("stream", {"Content-Type": "text/html"}, [b"<html></html>"]),
        ("status", 429, b'{"error": {"code": "1302", "message": "busy"}}'),
        ("status", 500, b"oops"),
        ("status", 401, b'{"error": {"message": "bad key"}}'),
        ("status", 400, b'{"error": {"message": "bad request"}}'),
        ("status", 400, b'{"error": {"code": "context_length_exceeded", "message": "long"}}'),
        ("timeout",),
        ("refused",),
    ]
)


async def _parts(parts: list[bytes]) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


class Scripted:
    """An upstream answering each send with the next scripted reply (then a good stream)."""

    def __init__(self, script: list[tuple[Any, ...]], log: list[Any]) -> None:
        self._script, self._log = list(script), log

    async def send(self, target: Target, body: Any, **kw: Any) -> UpstreamResponse:
        self._log.append((target.id, kw["read_timeout"], kw["stream"], body.get("stream")))
        reply = self._script.pop(0) if self._script else ("stream", SSE, [OPENING])
        if reply[0] == "timeout":
            raise UpstreamTimeout("read timed out")
        if reply[0] == "refused":
            raise UpstreamConnectionError("connection refused")
        if reply[0] == "status":
            return UpstreamResponse(reply[1], {}, reply[2])
        closed: list[int] = []
        self._log.append(closed)
        chunks = _parts(reply[2])
        return UpstreamResponse(200, reply[1], chunks=chunks, release=lambda: closed.append(1))


async def _open(
    inline: bool, targets: list[Target], script: list[Any], budget: int, slack: float
) -> Any:
    log: list[Any] = []
    ticks = itertools.count()
    router = Router(
        CONF,
        {"openai": Scripted(script, log)},  # type: ignore[dict-item]
        MemoryState(CONF.gateway.breaker),
        clock=lambda: next(ticks) * 0.5,
    )
    router.first_inline = inline
    router._routing = CONF.gateway.routing.model_copy(update={"max_attempts": budget})
    paused: list[float] = []

    async def pause(rs: RouteState, wait: float) -> None:
        paused.append(wait)

    router._pause = pause  # type: ignore[method-assign]
    rs = RouteState(Plan(candidates=[]))
    rs.plan.targets = list(targets)
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    try:
        session = await router.open_stream(body, rs, deadline=slack)
    except GatewayError as err:
        out: Any = (type(err).__name__, err.status, str(err), err.headers)
    else:
        out = (session.prelude, session.started, session.include_usage, session.state is rs)
    seen = (rs.attempts, rs.outcomes, rs.target, rs.adaptations, rs.native)
    return out, seen, log, paused, next(ticks)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(TARGETS[:6] + TARGETS[29:31]), max_size=4),
    st.lists(replies, max_size=8),
    st.integers(0, 4),
    st.sampled_from([0.0, 1.0, 3.0, 6.0, 1000.0]),
)
def test_the_streams_first_attempt_without_the_walk_is_the_walks(
    targets: list[Target], script: list[Any], budget: int, deadline: float
) -> None:
    fast = asyncio.run(_open(True, targets, script, budget, deadline))
    walked = asyncio.run(_open(False, targets, script, budget, deadline))
    assert fast == walked


def test_a_stream_that_fails_first_falls_over_to_the_next() -> None:
    """A named case: the first deployment's key is refused, the second commits (the walk
    resumed past the first attempt), and the refused stream's connection was released."""
    script = [("status", 401, b'{"error": {"message": "bad key"}}')]
    out, (attempts, *_), log, _, _ = asyncio.run(_open(True, TARGETS[:2], script, 3, 1000.0))
    assert out[0] == OPENING.rstrip(b"\n").split(b"\n\n")
    assert [a.status for a in attempts] == [401, 200]
    assert attempts[0].failure is not None and attempts[1].failure is None
    assert [entry[0] for entry in log if isinstance(entry, tuple)] == [
        TARGETS[0].id,
        TARGETS[1].id,
    ]


def test_a_stream_that_ends_before_its_first_token_is_closed_and_the_next_tried() -> None:
    script = [("stream", SSE, [b"data: [DONE]\n\n"])]
    out, (attempts, *_), log, _, _ = asyncio.run(_open(True, TARGETS[:2], script, 3, 1000.0))
    assert out[0] == OPENING.rstrip(b"\n").split(b"\n\n")
    assert [a.failure is None for a in attempts] == [False, True]
    assert log[1] == [1]  # the first stream's connection released, the committed one not yet
    assert log[3] == []


options = st.one_of(
    st.none(),
    st.just({}),
    st.just({"include_usage": True}),
    st.just({"include_usage": False}),
    st.just({"include_usage": 1}),
    st.just("yes"),
)
formats = st.one_of(
    st.none(),
    st.just({"type": "text"}),
    st.just({"type": "json_object"}),
    st.just({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}),
    st.just({"type": "json_schema"}),
    st.just("json_schema"),
)


@settings(max_examples=60, deadline=None)
@given(options, formats)
def test_the_streams_usage_and_schema_are_the_bodys(opts: Any, fmt: Any) -> None:
    """What the session says of the client's body: the usage chunk it asked for, and the
    json_schema guard (looked up only when the body has the field it reads)."""
    body: dict[str, Any] = {"model": "auto", "stream": True, "messages": []}
    if opts is not None:
        body["stream_options"] = opts
    if fmt is not None:
        body["response_format"] = fmt
    router = Router(CONF, {"openai": Scripted([], [])}, MemoryState(CONF.gateway.breaker))  # type: ignore[dict-item]
    rs = RouteState(Plan(candidates=[]))
    rs.plan.targets = [TARGETS[0]]
    session = asyncio.run(router.open_stream(body, rs, deadline=time.monotonic() + 60))
    assert session.include_usage is client_wants_usage(body)
    want = router._schemas.guard(body)
    got = session.guard
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert (got.name, got.validator) == (want.name, want.validator)


def test_the_relays_model_rewrites_are_model_rewriters() -> None:
    for target in TARGETS:
        for _ in range(2):  # made, then kept
            assert _rewriter(target) == model_rewriter(target)
