"""The edge's shortcuts against what they replace.

- :class:`~gateway.edge.watch.Watches` (one timer for every request's disconnect watch) against
  a loop timer per request: for any schedule of requests starting and ending, the same watches
  start, each at the same loop time (timers of whole milliseconds, like uvloop's).
- ``Endpoint._headers`` (the head built in one list, a target's headers kept) against the head
  as it was built before, for any routing outcome.
- ``Router._accept`` (its helpers written out, the usual finish reasons not looked up) against
  the function it was, for any answer body.
- ``Router.complete``'s first attempt made without the walk against the walk making it, for
  any plan, attempt budget, deadline and sequence of upstream replies.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue.loader import load_config
from gateway.catalogue.target import Target
from gateway.edge.asgi import header_map
from gateway.edge.asgi import safe_header as _safe
from gateway.edge.endpoint import _ATTEMPTS, Endpoint, _Ctx
from gateway.edge.watch import Watches
from gateway.errors import GatewayError
from gateway.frontends.base import Inbound
from gateway.providers.base import UpstreamConnectionError, UpstreamResponse, UpstreamTimeout
from gateway.providers.dialects import normalise_response
from gateway.routing import failures as fl
from gateway.routing.answers import parse_answer
from gateway.routing.planner import Plan
from gateway.routing.router import Attempt, Router, RouteState
from gateway.routing.sse import first_choice
from gateway.routing.structured import SchemaGuard
from gateway.state.memory import MemoryState
from tests.support.procs import CONFIG


class MsLoop:
    """A loop clock of whole milliseconds with uvloop's timers: ``call_later(d)`` fires when
    the clock reaches now + round(d * 1000) ms; timers due together fire in order of arming."""

    def __init__(self) -> None:
        self.ms = 0
        self._timers: list[tuple[int, int, Callable[..., None], tuple[Any, ...], list[bool]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.ms / 1000

    def call_later(self, delay: float, cb: Callable[..., None], *args: Any) -> Handle:
        cancelled = [False]
        due = self.ms + round(max(delay, 0.0) * 1000)
        heapq.heappush(self._timers, (due, next(self._seq), cb, args, cancelled))
        return Handle(cancelled)

    def advance(self, ms: int) -> None:
        """Run the clock ``ms`` forward, firing each timer at its own time."""
        end = self.ms + ms
        while self._timers and self._timers[0][0] <= end:
            due, _, cb, args, cancelled = heapq.heappop(self._timers)
            self.ms = max(self.ms, due)
            if not cancelled[0]:
                cb(*args)
        self.ms = end


class Handle:
    def __init__(self, cancelled: list[bool]) -> None:
        self._cancelled = cancelled

    def cancel(self) -> None:
        self._cancelled[0] = True


# A schedule: steps of (ms to wait, then: "add" a request, or "end" the n-th one still running)
steps = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from(["add", "add", "end"]), st.integers(0, 50)),
    max_size=60,
)


def _per_request(schedule: list[tuple[int, str, int]]) -> dict[int, int]:
    loop, started, handles = MsLoop(), {}, {}

    def start(rid: int) -> None:
        started[rid] = loop.ms

    rid = itertools.count()
    for wait, op, pick in schedule:
        loop.advance(wait)
        if op == "add":
            n = next(rid)
            handles[n] = loop.call_later(0.02, start, n)
        elif handles:
            handles.pop(sorted(handles)[pick % len(handles)]).cancel()
    loop.advance(1000)
    return started


def _shared(schedule: list[tuple[int, str, int]], monkeypatch: Any) -> dict[int, int]:
    loop, started, entries = MsLoop(), {}, {}
    monkeypatch.setattr("gateway.edge.watch.asyncio.get_running_loop", lambda: loop)
    watches = Watches(0.02)

    def start(rid: int) -> None:
        started[rid] = loop.ms

    rid = itertools.count()
    for wait, op, pick in schedule:
        loop.advance(wait)
        if op == "add":
            n = next(rid)
            entries[n] = watches.add(start, n)
        elif entries:
            entries.pop(sorted(entries)[pick % len(entries)]).clear()
    loop.advance(1000)
    assert watches.pending() == 0
    return started


@settings(max_examples=300, deadline=None)
@given(steps)
def test_one_timer_starts_each_watch_when_its_own_timer_would(
    schedule: list[tuple[int, str, int]],
) -> None:
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        assert _shared(schedule, mp) == _per_request(schedule)


def test_a_new_loop_gets_a_timer_of_its_own(monkeypatch: Any) -> None:
    first, second, started = MsLoop(), MsLoop(), []
    watches = Watches(0.02)
    monkeypatch.setattr("gateway.edge.watch.asyncio.get_running_loop", lambda: first)
    watches.add(started.append, 1)  # this loop stops before its timer fires
    monkeypatch.setattr("gateway.edge.watch.asyncio.get_running_loop", lambda: second)
    watches.add(started.append, 2)
    second.advance(20)
    assert started == [2]


# --- the response head ------------------------------------------------------------------------

TARGETS = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9").catalogue.targets
BUSY = fl.Failure(fl.FailureClass.OVERLOADED, 503, "1305", "busy")


def _reference_headers(ctx: _Ctx) -> list[tuple[bytes, bytes]]:
    """``Endpoint._headers`` as it was before the head was built in one list."""
    rs = ctx.rs
    target = rs.target if rs else None
    if target is None and rs and rs.attempts:
        target = rs.attempts[-1].target
    tries = len(rs.attempts) if rs else 0
    out = [
        (b"x-request-id", ctx.request_id[:200].encode("latin-1", "replace")),
        (b"x-glm-variant", (target.variant.id if target else "none").encode()),
        (b"x-glm-provider", (target.provider if target else "none").encode()),
        _ATTEMPTS[tries] if tries < len(_ATTEMPTS) else (b"x-glm-attempts", b"%d" % tries),
    ]
    if rs is not None:
        tried = rs.attempts
        if len(tried) != 1 or tried[0].failure is not None:
            reason = rs.fallback_reason
            if reason:
                out.append((b"x-glm-fallback-reason", _safe(reason)))
        if rs.headers:
            out.extend([(k.encode(), _safe(v)) for k, v in rs.headers])
        if rs.adaptations and rs.target is not None:
            out.append((b"x-glm-adapted", _safe(",".join(rs.adaptations))))
    inbound = ctx.inbound
    if inbound is not None:
        native = rs is not None and rs.native and inbound.native_headers is not None
        extra = inbound.native_headers if native else inbound.headers
        if extra:
            out.extend([(k.encode(), _safe(v)) for k, v in extra])
    return out


ENDPOINT = Endpoint.__new__(Endpoint)
ENDPOINT._heads = {}
texts = st.text(max_size=8)
pairs = st.lists(st.tuples(st.sampled_from(["x-a", "x-ratelimit-b"]), texts), max_size=2)


@st.composite
def contexts(draw: st.DrawFn) -> _Ctx:
    rid = draw(st.one_of(st.just("req_0123456789abcdef01234567"), st.text(max_size=220)))
    ctx = _Ctx(rid, 0.0)
    if draw(st.booleans()):
        rs = RouteState(Plan(candidates=[]))
        many = st.integers(0, 3) if draw(st.integers(0, 5)) else st.integers(15, 17)
        rs.attempts = [
            Attempt(draw(st.sampled_from(TARGETS)), 200, draw(st.sampled_from([None, BUSY])), 0.0)
            for _ in range(draw(many))
        ]
        rs.target = draw(st.one_of(st.none(), st.sampled_from(TARGETS)))
        rs.headers = draw(pairs)
        rs.adaptations = draw(st.lists(texts, max_size=2))
        rs.native = draw(st.booleans())
        ctx.rs = rs
    if draw(st.booleans()):
        native = draw(st.one_of(st.none(), pairs))
        ctx.inbound = Inbound({}, False, draw(pairs), native_headers=native)
    return ctx


@settings(max_examples=400, deadline=None)
@given(contexts(), st.lists(st.tuples(st.binary(max_size=3), st.binary(max_size=3)), max_size=2))
def test_head_is_the_head_it_was(ctx: _Ctx, first: list[tuple[bytes, bytes]]) -> None:
    for _ in range(2):  # the target's headers built, then kept (across examples too)
        assert ENDPOINT._headers(ctx, list(first)) == [*first, *_reference_headers(ctx)]


# --- the router's acceptance of a 2xx answer --------------------------------------------------

ROUTER_CONFIG = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")


def _reference_accept(
    router: Router,
    resp: UpstreamResponse,
    target: Target,
    rs: RouteState,
    changes: list[str],
    started: float,
    guard: SchemaGuard | None,
    encode: bool,
) -> bytes | fl.Failure:
    """``Router._accept`` as it was before its helpers were written out in it."""
    obj = parse_answer(resp.body, resp.headers)
    if isinstance(obj, fl.Failure):
        return obj
    choice = first_choice(obj)
    fr = choice.get("finish_reason") if choice else None
    failure = fl.classify_finish_reason(fr) if isinstance(fr, str) else None
    if failure is not None and failure.cls is not fl.FailureClass.CONTENT_FILTER:
        return failure
    normalise_response(obj, target)
    miss = guard.check(obj) if guard is not None else None
    if miss is not None:
        return miss
    router._succeeded(rs, target, 200, started, changes)
    usage = obj.get("usage")
    rs.usage = usage if isinstance(usage, dict) else None
    if not encode:
        rs.answer = obj
        return b""
    return orjson.dumps(obj)


reasons = st.one_of(
    st.sampled_from(["stop", "length", "tool_calls", "sensitive", "network_error", "error"]),
    st.none(),
    st.integers(0, 3),
    st.text(max_size=6),
)
contents = st.sampled_from(['{"a": 1}', "[1]", "plain text", "```json\n{}\n```", ""])
choice_dicts = st.fixed_dictionaries(
    {"index": st.just(0)},
    optional={
        "finish_reason": reasons,
        "message": st.fixed_dictionaries({"role": st.just("assistant"), "content": contents}),
    },
)
answers = st.one_of(
    st.fixed_dictionaries(
        {"choices": st.lists(st.one_of(choice_dicts, st.integers(-5, 5)), max_size=2)},
        optional={
            "usage": st.one_of(st.none(), st.just({"prompt_tokens": 3, "completion_tokens": 4})),
            "model": st.just("upstream-name"),
        },
    ),
    st.just({"error": {"code": "1302", "message": "busy"}}),
    st.just({"choices": "none"}),
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(answers.map(orjson.dumps), st.just(b"not json")),
    st.sampled_from(TARGETS),
    st.booleans(),
    st.booleans(),
)
def test_accept_is_the_accept_it_was(
    body: bytes, target: Target, checked: bool, encode: bool
) -> None:
    router = Router(
        ROUTER_CONFIG, {}, MemoryState(ROUTER_CONFIG.gateway.breaker), clock=lambda: 2.0
    )
    schema = {
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    }
    got = []
    for accept in (router._accept, partial(_reference_accept, router)):
        rs = RouteState(Plan(candidates=[]))
        guard = router._schemas.guard(schema) if checked else None
        resp = UpstreamResponse(200, {"content-type": "application/json"}, body)
        out = accept(resp, target, rs, ["x"], 1.0, guard, encode)
        seen = (rs.attempts, rs.outcomes, rs.target, rs.adaptations, rs.usage, rs.answer)
        got.append((out, seen, guard.misses if guard is not None else None))
    assert got[0] == got[1]


# --- the router's first attempt, made without the walk ----------------------------------------

COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}
# What one upstream attempt gets: an answer, an error status, or no answer
replies = st.sampled_from(
    [
        ("ok",),
        ("status", 429, b'{"error": {"code": "1302", "message": "busy"}}'),
        ("status", 500, b"oops"),
        ("status", 503, b"down"),
        ("status", 400, b'{"error": {"message": "bad request"}}'),
        ("status", 401, b'{"error": {"message": "bad key"}}'),
        ("status", 400, b'{"error": {"code": "context_length_exceeded", "message": "too long"}}'),
        ("status", 200, b"not json"),
        ("status", 200, b'{"choices": [{"finish_reason": "network_error"}]}'),
        ("timeout",),
        ("refused",),
    ]
)


class Scripted:
    """An upstream answering each send with the next scripted reply (then answers)."""

    def __init__(self, script: list[tuple[Any, ...]], log: list[Any]) -> None:
        self._script, self._log = list(script), log

    async def send(self, target: Target, body: Any, **kw: Any) -> UpstreamResponse:
        self._log.append((target.id, kw["read_timeout"]))
        reply = self._script.pop(0) if self._script else ("ok",)
        if reply[0] == "timeout":
            raise UpstreamTimeout("read timed out")
        if reply[0] == "refused":
            raise UpstreamConnectionError("connection refused")
        if reply[0] == "ok":
            return UpstreamResponse(200, {}, orjson.dumps(COMPLETION))
        return UpstreamResponse(reply[1], {}, reply[2])


async def _complete(
    inline: bool, targets: list[Target], script: list[Any], budget: int, slack: float
) -> Any:
    log: list[Any] = []
    ticks = itertools.count()
    router = Router(
        ROUTER_CONFIG,
        {"openai": Scripted(script, log)},  # type: ignore[dict-item]
        MemoryState(ROUTER_CONFIG.gateway.breaker),
        clock=lambda: next(ticks) * 0.5,
    )
    router.first_inline = inline
    router._routing = ROUTER_CONFIG.gateway.routing.model_copy(update={"max_attempts": budget})
    paused: list[float] = []

    async def pause(rs: RouteState, wait: float) -> None:
        paused.append(wait)

    router._pause = pause  # type: ignore[method-assign]
    rs = RouteState(Plan(candidates=[]))
    rs.plan.targets = list(targets)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    try:
        out: Any = await router.complete(body, rs, deadline=slack)
    except GatewayError as err:
        out = (type(err).__name__, err.status, str(err), err.headers)
    return out, rs.attempts, rs.outcomes, rs.target, log, paused, next(ticks)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(TARGETS[:6] + TARGETS[29:31]), max_size=4),
    st.lists(replies, max_size=8),
    st.integers(1, 4),
    st.sampled_from([0.0, 1.0, 3.0, 6.0, 1000.0]),
)
def test_the_first_attempt_without_the_walk_is_the_walks(
    targets: list[Target], script: list[Any], budget: int, deadline: float
) -> None:
    import asyncio

    fast = asyncio.run(_complete(True, targets, script, budget, deadline))
    walked = asyncio.run(_complete(False, targets, script, budget, deadline))
    assert fast == walked


@given(st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=6)), max_size=8))
def test_header_map_is_the_comprehension_it_was(pairs: list[tuple[bytes, bytes]]) -> None:
    want = {k.decode("latin-1"): v.decode("latin-1") for k, v in pairs}
    got = header_map({"headers": pairs})
    assert got == want
    assert list(got) == list(want)  # the same order too
