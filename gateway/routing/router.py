"""The fallback loop: try the plan's candidates in order until one answers.

What each failure means is decided in :mod:`gateway.routing.failures`; this module only
follows the decision (retry the same deployment, move on, or stop), keeps the deadline, and
records every attempt so the answer (or the error) can say what happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast, overload

import orjson

from gateway.catalogue.catalogue import Config
from gateway.catalogue.needs import Needs
from gateway.catalogue.schema import RoutingConfig
from gateway.catalogue.target import Bill, Target, bill
from gateway.errors import (
    ContextLengthExceeded,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    UpstreamsFailed,
)
from gateway.frontends.base import NativeCall
from gateway.observability.redact import Redactor
from gateway.observability.timing import StageTimes
from gateway.observability.traces import AttemptTracer
from gateway.providers.base import (
    NativeSender,
    Provider,
    UpstreamConnectionError,
    UpstreamResponse,
    UpstreamTimeout,
)
from gateway.providers.dialects import adapt_request, client_wants_usage, normalise_response
from gateway.routing import failures as fl
from gateway.routing.affinity import Affinity, Pinned, session_key
from gateway.routing.answers import is_event_stream, not_a_stream, parse_answer
from gateway.routing.planner import Plan
from gateway.routing.sse import (
    SSEReader,
    carries_content,
    event_json,
    plain_chunk,
)
from gateway.routing.structured import SchemaCache, SchemaGuard
from gateway.state.base import Lease, Outcome, StateStore
from gateway.tenancy.auth import Caller
from gateway.tenancy.limits import Admission

DEADLINE_SLACK_S = 0.01
"""A deadline this close counts as passed: timers (uvloop's are in ms) may fire a hair early,
and an attempt with less time than this left could not be answered anyway."""

_KEY_WIDE = frozenset({fl.FailureClass.RATE_LIMIT, fl.FailureClass.QUOTA})
"""Failures that hold for every deployment on the same provider key, for this request."""

_PLAIN_FINISH = frozenset(
    r for r in ("stop", "length", "tool_calls") if fl.classify_finish_reason(r) is None
)
"""The usual finish reasons that are no failure (asked of ``failures`` once, not per answer)."""

_NOT_THE_HOSTS_FAULT = frozenset(
    {
        fl.FailureClass.CALLER,
        fl.FailureClass.CONTENT_FILTER,
        fl.FailureClass.CONTEXT,
        fl.FailureClass.SCHEMA,
    }
)


@dataclass(slots=True)
class Attempt:
    target: Target
    status: int
    failure: fl.Failure | None
    duration_s: float

    def describe(self) -> dict[str, Any]:
        f = self.failure
        return {
            "provider": self.target.provider,
            "variant": self.target.variant.id,
            "status": self.status,
            "class": f.cls.value if f else "ok",
            "code": f.code if f else None,
            "message": (f.message[:300] if f else "ok"),
            "duration_ms": round(self.duration_s * 1000, 1),
        }

    def short(self) -> str:
        f = self.failure
        if f is None:
            return f"{self.target.id} ok"
        code = f" code={f.code}" if f.code else ""
        return f"{self.target.id} {f.cls.value} {self.status or 'no-answer'}{code}"


@dataclass(slots=True)
class RouteState:
    """What happened while routing one request (for headers, logs, metrics, state)."""

    plan: Plan
    attempts: list[Attempt] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    target: Target | None = None
    adaptations: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    backoff_s: float = 0.0
    """Time slept between retries (neither upstream nor gateway work, for overhead metrics)."""
    lease: Lease | None = None
    """What shared state reserved for this request (settled by ``Router.record``)."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Response headers from admission (``x-ratelimit-*``)."""
    native: bool = False
    """The answer came from a host speaking the client's API natively (not translated)."""
    answer: dict[str, Any] | None = None
    """The OpenAI-shaped answer object, when ``complete`` was asked not to encode it."""
    trace: AttemptTracer | None = None
    """Traces on: opens each upstream attempt's span and gives its ``traceparent``."""
    pinned: Pinned | None = None
    """The request's session and its pin (session affinity on)."""
    content_parts: bool = True
    """Some message of the request has content parts (from :class:`Needs`; True: unknown)."""
    bill: Bill | None = None
    """What ``usage`` comes to on ``target``, worked out once by :meth:`Router.record` for the
    lease's settlement and read again by the access record."""

    @property
    def fallback_reason(self) -> str | None:
        failed = [a.short() for a in self.attempts if a.failure is not None]
        return "; ".join(failed) if failed else None


@dataclass(slots=True)
class StreamSession:
    """A committed stream: the events read so far and the live reader for the rest."""

    state: RouteState
    response: UpstreamResponse
    reader: SSEReader
    prelude: list[bytes]
    started: float
    include_usage: bool = False
    """The client asked for a final usage chunk (the upstream is always asked)."""
    guard: SchemaGuard | None = None
    """A json_schema request: the relay checks the streamed answer at its end."""
    native: NativeCall | None = None
    """Set when the host streams the client's own API (events passed on as they are)."""


class Router:
    first_inline = True
    """:meth:`complete` and :meth:`open_stream` make the first attempt without the walk (False:
    through it, as tests compare)."""

    def __init__(
        self,
        config: Config,
        providers: Mapping[str, Provider],
        state: StateStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        admission: Admission | None = None,
        redactor: Redactor | None = None,
        affinity: Affinity | None = None,
    ) -> None:
        self._admission = admission or Admission(config, state, wall=wallclock)
        self._affinity = affinity
        self._prefix = affinity.prefix_messages if affinity is not None else 0
        self._redact = redactor if redactor is not None else Redactor()
        self._config = config
        self._routing = config.gateway.routing
        self._providers = providers
        self._state = state
        self._clock = clock
        self._wall = wallclock
        self._schemas = SchemaCache()
        self._same_key = _siblings_by_key(config.catalogue.targets)

    @property
    def _routing(self) -> RoutingConfig:
        return self._routing_config

    @_routing.setter
    def _routing(self, routing: RoutingConfig) -> None:
        self._routing_config = routing
        # What every request reads, as plain attributes (a pydantic field's read costs ~2.5x).
        self._max_attempts = routing.max_attempts
        self._total_timeout = routing.total_timeout_s
        self._attempt_timeout = routing.attempt_timeout_s
        self._connect_timeout = routing.connect_timeout_s
        self._ttft_timeout = routing.ttft_timeout_s

    def deadline(self, needs: Needs) -> float:
        total = self._total_timeout
        timeout = needs.timeout
        if timeout is not None and timeout < total:  # min(total, timeout)
            total = timeout
        return self._clock() + total

    async def plan(
        self, needs: Needs, times: StageTimes | None = None, caller: Caller | None = None
    ) -> Plan:
        """The plan as shared state stands (``/v1/route``): nothing reserved, no probe taken."""
        admitted = await self._admission.admit(needs, caller, reserve=False, times=times)
        return admitted.plan

    def session(
        self, headers: Mapping[str, str], named: str | None, body: dict[str, Any]
    ) -> str | None:
        """The request's hashed session key, or None with session affinity off."""
        if self._affinity is None:
            return None
        return session_key(headers, named, body, self._prefix)

    async def admit(
        self,
        needs: Needs,
        caller: Caller | None,
        times: StageTimes | None = None,
        session: str | None = None,
    ) -> RouteState:
        """Plan and take the request's lease (limits, budget, probes): one state call, which
        also reads a ``session``'s pin; its deployment then goes first."""
        admitted = await self._admission.admit(needs, caller, times=times, session=session or "")
        # (positional, the lists made here: no keyword matching, no default factory called)
        rs = RouteState(
            admitted.plan, [], [], None, [], None, 0.0, admitted.lease, admitted.headers
        )
        rs.content_parts = needs.content_parts
        if session is not None and self._affinity is not None:
            rs.pinned = Pinned(
                session, admitted.pin, admitted.pin_first, admitted.pin_known, admitted.pin_choice
            )
        return rs

    def record(self, rs: RouteState) -> Awaitable[object]:
        """After the answer: outcomes, attempts and the lease's settlement (one state call),
        and the session's pin when it is new or moves (sent alongside: one round trip). The
        state calls to await (not a coroutine of its own: one frame fewer per request)."""
        pin = None
        if rs.pinned is not None and self._affinity is not None:
            pin = self._affinity.decide(rs.pinned, rs.target, rs.attempts)
        tried = rs.attempts
        attempted = [tried[0].target] if len(tried) == 1 else [a.target for a in tried]
        target = rs.target
        billed = None if target is None else bill(target, rs.usage)
        rs.bill = billed
        settle = self._admission.settle(rs.lease, rs.outcomes, attempted, target, billed)
        if pin is None:
            return settle
        return asyncio.gather(settle, self._state.set_pin(*pin))

    async def complete(
        self,
        body: dict[str, Any],
        rs: RouteState,
        deadline: float,
        native: NativeCall | None = None,
        encode: bool = True,
    ) -> bytes:
        """Non-streaming: the answer body (OpenAI-shaped, ``model`` = variant id), or the host's
        own answer in the client's API when ``native`` serves the deployment (``rs.native``).
        ``encode=False`` (a front-end that reads the object): the OpenAI-shaped answer is left
        in ``rs.answer`` and ``b""`` returned, saving a dump and the front-end's parse."""
        guard = self._schemas.guard(body) if "response_format" in body else None
        walk, step = self._first(rs, deadline)
        while step is not None:
            if not isinstance(step, tuple):  # a backoff before a retry
                await self._pause(rs, step)
                step = next(walk, None) if walk is not None else None
                continue
            target, tries = step
            if native is not None and native.serves(target):  # the host's own API
                direct: NativeCall | None = native
                upstream, changes = native.body(target), [f"api={native.api}:native"]
            else:
                direct = None
                upstream, changes = adapt_request(body, target, rs.content_parts)
            started = self._clock()
            failure: fl.Failure
            status = 0
            try:
                resp = await self._send(target, upstream, False, deadline, direct, rs.trace)
            except (UpstreamTimeout, UpstreamConnectionError) as exc:
                failure = fl.classify_exception(exc)
            else:
                status = resp.status
                if 200 <= status < 300:
                    out = (
                        self._accept_native(direct, resp, target, rs, changes, started)
                        if direct is not None
                        else self._accept(resp, target, rs, changes, started, guard, encode)
                    )
                    if isinstance(out, bytes):
                        if walk is not None:
                            next(walk, None)  # it ends there (see _walk)
                        return out
                    failure = out
                else:
                    failure = fl.classify_response(status, resp.headers, resp.body)
            self._failed(rs, target, status, failure, started, tries)
            if guard is not None and guard.exhausted:
                raise guard.error([a.describe() for a in rs.attempts])
            if walk is None:
                walk = self._walk(rs, deadline, resumed=True)
            step = next(walk, None)
        raise self._all_failed(rs, deadline)

    def _accept(
        self,
        resp: UpstreamResponse,
        target: Target,
        rs: RouteState,
        changes: list[str],
        started: float,
        guard: SchemaGuard | None = None,
        encode: bool = True,
    ) -> bytes | fl.Failure:
        # parse_answer, written out for the usual answer (an odd one is parsed there again)
        try:
            obj = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            obj = None
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list):
            odd = parse_answer(resp.body, resp.headers)
            assert isinstance(odd, fl.Failure)  # what it says of all but an object with a list
            return odd
        # first_choice, written out
        choice = choices[0] if choices and isinstance(choices[0], dict) else None
        fr = choice.get("finish_reason") if choice else None
        if isinstance(fr, str) and fr not in _PLAIN_FINISH:
            failure = fl.classify_finish_reason(fr)
            if failure is not None and failure.cls is not fl.FailureClass.CONTENT_FILTER:
                return failure
        normalise_response(obj, target)
        if guard is not None:
            miss = guard.check(obj)
            if miss is not None:
                return miss
        took = self._clock() - started  # self._succeeded, written out
        rs.attempts.append(Attempt(target, 200, None, took))
        rs.outcomes.append(Outcome(target.id, True, took))
        rs.target = target
        rs.adaptations = changes
        usage = obj.get("usage")
        rs.usage = usage if isinstance(usage, dict) else None
        if not encode:
            rs.answer = obj
            return b""
        return orjson.dumps(obj)

    def _accept_native(
        self,
        native: NativeCall,
        resp: UpstreamResponse,
        target: Target,
        rs: RouteState,
        changes: list[str],
        started: float,
    ) -> bytes | fl.Failure:
        got = native.accept(resp.body)
        if isinstance(got, str):
            if b'"error"' in resp.body:
                return fl.classify_response(200, resp.headers, resp.body)
            return fl.Failure(fl.FailureClass.TRANSIENT, 200, None, got)
        raw, usage = got
        self._succeeded(rs, target, 200, started, changes)
        rs.native, rs.usage = True, usage or None
        return raw

    def _succeeded(
        self, rs: RouteState, target: Target, status: int, started: float, changes: list[str]
    ) -> None:
        took = self._clock() - started
        rs.attempts.append(Attempt(target, status, None, took))
        rs.outcomes.append(Outcome(target.id, True, took))
        rs.target = target
        rs.adaptations = changes

    async def open_stream(
        self,
        body: dict[str, Any],
        rs: RouteState,
        deadline: float,
        native: NativeCall | None = None,
    ) -> StreamSession:
        """Streaming: fall over invisibly until one upstream sends its first content token."""
        guard = self._schemas.guard(body) if "response_format" in body else None
        walk, step = self._first(rs, deadline)  # as in complete
        while step is not None:
            if not isinstance(step, tuple):  # a backoff before a retry
                await self._pause(rs, step)
                step = next(walk, None) if walk is not None else None
                continue
            target, tries = step
            if native is not None and native.serves(target):  # the host's own API
                direct: NativeCall | None = native
                upstream, changes = native.body(target), [f"api={native.api}:native"]
            else:
                direct = None
                upstream, changes = adapt_request(body, target, rs.content_parts)
            started = self._clock()
            failure: fl.Failure
            status = 0
            try:
                resp = await self._send(target, upstream, True, deadline, direct, rs.trace)
            except (UpstreamTimeout, UpstreamConnectionError) as exc:
                failure = fl.classify_exception(exc)
            else:
                status = resp.status
                if status >= 300 or resp.chunks is None:
                    failure = fl.classify_response(status, resp.headers, resp.body)
                elif not is_event_stream(resp.headers):
                    failure = await not_a_stream(resp, self._ttft_left(deadline))
                else:
                    reader = SSEReader(resp.chunks)
                    got = await self._until_commit(reader, deadline, direct)
                    if not isinstance(got, fl.Failure):
                        rs.target = target
                        rs.adaptations = changes
                        rs.native = direct is not None
                        rs.attempts.append(Attempt(target, status, None, self._clock() - started))
                        if walk is not None:
                            next(walk, None)  # it ends there (see _walk)
                        usage = "stream_options" in body and client_wants_usage(body)
                        return StreamSession(rs, resp, reader, got, started, usage, guard, direct)
                    await resp.close()
                    failure = got
            self._failed(rs, target, status, failure, started, tries)
            if walk is None:
                walk = self._walk(rs, deadline, resumed=True)
            step = next(walk, None)
        raise self._all_failed(rs, deadline)

    @overload
    def redacted(self, failure: fl.Failure) -> fl.Failure: ...
    @overload
    def redacted(self, failure: None) -> None: ...
    def redacted(self, failure: fl.Failure | None) -> fl.Failure | None:
        """``failure`` with no secret in its upstream text (for a stream's error event)."""
        return None if failure is None else fl.redacted(failure, self._redact)

    def stream_ended(self, session: StreamSession, failure: fl.Failure | None) -> None:
        """Record how a committed stream ended (for breakers and latency)."""
        rs, target = session.state, session.state.attempts[-1].target
        took = self._clock() - session.started
        if failure is None:
            rs.outcomes.append(Outcome(target.id, True, took))
        else:
            failure = fl.redacted(failure, self._redact)
            rs.attempts[-1].failure = failure
            rs.outcomes.append(Outcome(target.id, False, took, failure.cls.value, None))

    def _first(
        self, rs: RouteState, deadline: float
    ) -> tuple[Iterator[tuple[Target, int] | float] | None, tuple[Target, int] | float | None]:
        """The attempt walk (None: not started) and its first step. The first attempt is made
        without the walk (a generator set up and resumed twice, ~4,000 instructions), which
        most requests never need: the caller starts it once that attempt fails."""
        if rs.plan.targets and self._max_attempts > 0 and self.first_inline:
            if self._clock() >= deadline - DEADLINE_SLACK_S:  # what the walk checks first
                raise self._deadline(rs)
            return None, (rs.plan.targets[0], 1)
        walk = self._walk(rs, deadline)
        return walk, next(walk, None)

    def _ttft_left(self, deadline: float) -> float:
        return min(self._ttft_timeout, max(0.0, deadline - self._clock()))

    async def _until_commit(
        self, reader: SSEReader, deadline: float, native: NativeCall | None = None
    ) -> list[bytes] | fl.Failure:
        ttft = self._ttft_left(deadline)
        commits = native.commits if native is not None else carries_content
        prelude: list[bytes] = []
        try:
            # The time to the first token, armed at the first wait: events that arrived with
            # the answer's head need no timer.
            async with asyncio.timeout(None) as limit:
                reader.take_arrived()
                while True:
                    event = reader.pop_buffered()
                    if event is None:
                        if limit.when() is None:
                            limit.reschedule(asyncio.get_running_loop().time() + ttft)
                        event = await reader.next_event()
                    if event is None:
                        return fl.Failure(
                            fl.FailureClass.TRANSIENT,
                            200,
                            None,
                            "stream ended before the first token",
                        )
                    prelude.append(event)
                    if native is None:
                        plain = _opening(event)
                        if plain is not None:
                            if plain:
                                return prelude  # the first text: the commit, nothing to check
                            continue  # the role, empty content: nothing to commit or check
                    obj = event_json(event)
                    if commits(obj):
                        return self._check_first(obj) or prelude
                    if isinstance(obj, dict) and "error" in obj:
                        failure = fl.classify_stream_event(obj)
                        if failure is not None:
                            return failure
        except TimeoutError:
            return fl.Failure(
                fl.FailureClass.TIMEOUT, 200, None, f"no first token within {ttft:.3g}s"
            )
        except (UpstreamTimeout, UpstreamConnectionError) as exc:
            return fl.classify_exception(exc)

    @staticmethod
    def _check_first(obj: Any) -> fl.Failure | None:
        return fl.stream_failure(obj)

    def _walk(
        self, rs: RouteState, deadline: float, resumed: bool = False
    ) -> Iterator[tuple[Target, int] | float]:
        """Yield (target, try number) in plan order, honouring retry/next decisions; before a
        retry, the seconds to back off first (a float: the caller sleeps them, :meth:`_pause`).
        A plain generator: no async generator to set up and close per request. Once an attempt
        succeeded, the caller resumes it once more so that it returns (it would be closed
        otherwise: on Python 3.11 a GeneratorExit thrown in, ~3x the cost). ``resumed``: the
        caller made the first attempt (the plan's first target, try 1) and it failed: the walk
        goes on from there as though it had yielded it."""
        larger_than: int | None = None
        bad_keys: set[tuple[str, str, str | None]] = set()
        budget = self._max_attempts
        for target in rs.plan.targets:
            if larger_than is not None and (target.context or 0) <= larger_than:
                continue
            if bad_keys and target.account in bad_keys:
                continue  # the same key on this surface just failed auth/balance: it will again
            tries = 0
            while budget > 0:
                if resumed:  # the first attempt, which the caller made and recorded failed
                    resumed = False
                    tries += 1
                    budget -= 1
                else:
                    if self._clock() >= deadline - DEADLINE_SLACK_S:
                        raise self._deadline(rs)
                    tries += 1
                    budget -= 1
                    before = len(rs.attempts)
                    yield target, tries
                    if len(rs.attempts) == before:
                        return
                last = rs.attempts[-1].failure
                if last is None:  # answered
                    return
                decision = fl.decide(
                    last, attempt_on_target=tries, transient_retries=self._routing.transient_retries
                )
                if decision.action is fl.Action.FAIL:
                    raise self._caller_error(rs, last)
                if decision.larger_context_only:
                    larger_than = target.context or 0
                if decision.mark_key_bad or (
                    decision.action is fl.Action.NEXT and last.cls in _KEY_WIDE
                ):
                    # this provider key is refused or throttled as a whole (GLM 1302/1303
                    # concurrency and frequency, quotas): its other deployments would say the
                    # same in this request, so move on to another provider
                    bad_keys.add(target.account)
                if decision.action is fl.Action.RETRY:
                    yield self._backoff_s(last, tries, deadline)
                    continue
                break

    def _backoff_s(self, failure: fl.Failure, tries: int, deadline: float) -> float:
        wait = self._routing.retry_backoff_s * (2 ** (tries - 1))
        if (
            failure.retry_after is not None
            and failure.retry_after <= self._routing.max_retry_after_s
        ):
            wait = max(wait, failure.retry_after)
        return float(min(wait, max(0.0, deadline - self._clock())))

    async def _pause(self, rs: RouteState, wait: float) -> None:
        """Sleep a backoff, counted in ``rs.backoff_s``."""
        slept = self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        rs.backoff_s += self._clock() - slept

    def _failed(
        self,
        rs: RouteState,
        target: Target,
        status: int,
        failure: fl.Failure,
        started: float,
        tries: int,
    ) -> None:
        took = self._clock() - started
        failure = fl.redacted(failure, self._redact)  # every attempt's text leaves: bodies, logs
        rs.attempts.append(Attempt(target, status, failure, took))
        decision = fl.decide(
            failure, attempt_on_target=tries, transient_retries=self._routing.transient_retries
        )
        if failure.cls not in _NOT_THE_HOSTS_FAULT:
            cls, cooldown, key_bad = failure.cls.value, decision.cooldown_s, decision.mark_key_bad
            rs.outcomes.append(Outcome(target.id, False, took, cls, cooldown, key_bad))
            if key_bad or fl.account_wide(failure):  # so is every deployment on that key
                for sibling in self._same_key.get(target.id, ()):
                    rs.outcomes.append(Outcome(sibling, False, 0.0, cls, cooldown, True))

    def _send(
        self,
        target: Target,
        body: dict[str, Any],
        stream: bool,
        deadline: float,
        native: NativeCall | None = None,
        trace: AttemptTracer | None = None,
    ) -> Awaitable[UpstreamResponse]:
        """The provider's send, to await (not a coroutine of its own: one frame fewer to start
        and to resume through while the answer's head is awaited). Raises
        :class:`UpstreamTimeout` at once when the deadline has passed."""
        # First, so that every attempt the caller records (a deadline one below too) has a span.
        sent = trace.attempt(target) if trace is not None else None
        remaining = deadline - self._clock()
        # min(attempt timeout, target.timeout or 1e9, remaining), without the builtin's call
        read = self._attempt_timeout
        own = target.timeout or 1e9
        if own < read:
            read = own
        if remaining < read:
            read = remaining
        connect = self._connect_timeout
        if read < connect:  # min(connect timeout, read)
            connect = read
        if read <= 0:
            raise UpstreamTimeout("deadline reached")
        if native is not None:
            sender = cast(NativeSender, self._providers["openai"])
            return sender.send_native(
                target,
                native.url(target),
                native.headers,
                body,
                stream=stream,
                connect_timeout=connect,
                read_timeout=read,
                trace_headers=sent,
            )
        provider = self._providers[target.adapter]
        return provider.send(
            target,
            body,
            stream=stream,
            connect_timeout=connect,
            read_timeout=read,
            trace_headers=sent,
        )

    def _caller_error(self, rs: RouteState, failure: fl.Failure) -> GatewayError:
        status, etype, code = fl.client_error_for(failure)
        last = rs.attempts[-1].target
        err = InvalidRequest(
            f"{last.provider} ({last.variant.id}) rejected the request: {failure.message}",
            code=code,
            extra={"attempts": [a.describe() for a in rs.attempts]},
        )
        err.status = status
        err.type = etype
        return err

    def _deadline(self, rs: RouteState) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"The request deadline passed after {len(rs.attempts)} upstream attempt(s): "
            + ("; ".join(a.short() for a in rs.attempts) or "none"),
            extra={"attempts": [a.describe() for a in rs.attempts]},
        )

    def _all_failed(self, rs: RouteState, deadline: float) -> GatewayError:
        if not rs.attempts:
            return UpstreamsFailed("No candidate could be tried (all skipped).", status=503)
        if self._clock() >= deadline - DEADLINE_SLACK_S:
            return self._deadline(rs)
        classes = {a.failure.cls for a in rs.attempts if a.failure}
        if classes == {fl.FailureClass.CONTEXT}:
            return ContextLengthExceeded(
                "The prompt does not fit any capable deployment's window: "
                + "; ".join(
                    f"{a.short()} ({a.failure.message[:120]})" for a in rs.attempts if a.failure
                )
                + ". Shorten the messages or lower max_tokens.",
                param="messages",
                extra={"attempts": [a.describe() for a in rs.attempts]},
            )
        capacity = classes <= fl.CAPACITY_CLASSES
        headers: dict[str, str] = {}
        if capacity:
            waits = [
                a.failure.retry_after for a in rs.attempts if a.failure and a.failure.retry_after
            ]
            headers["Retry-After"] = str(max(1, int(min(waits)))) if waits else "1"
        return UpstreamsFailed(
            f"All {len(rs.attempts)} upstream attempt(s) failed: "
            + "; ".join(
                f"{a.short()} ({a.failure.message[:120]})" for a in rs.attempts if a.failure
            ),
            status=503 if capacity else 502,
            headers=headers,
            extra={"attempts": [a.describe() for a in rs.attempts]},
        )


_FIRST_DELTA = b'"choices":[{"index":0,"delta":{'
_ROLE = b'"role":"assistant",'


def _opening(event: bytes) -> bool | None:
    """A plain chunk's part in the stream start, decided on its bytes (the relay passes such a
    chunk unparsed too): True when its first choice's delta opens with a non-empty ``content``
    string (after ``role``, if any): it commits the stream and carries no failure; False when
    that delta is only an empty ``content`` (and ``role``): no commit, no failure; None: parse
    it. A plain chunk (:func:`~gateway.routing.sse.plain_chunk`) has no finish reason, error,
    reasoning or tool calls."""
    at = event.find(_FIRST_DELTA)
    if at < 0:
        return None
    at += len(_FIRST_DELTA)
    if event.startswith(_ROLE, at):
        at += len(_ROLE)
    if not event.startswith(b'"content":"', at):
        return None
    if event[at + 11 : at + 12] != b'"':
        return True if plain_chunk(event) else None
    if event.startswith(b'"content":""}', at):
        return False if plain_chunk(event) else None
    return None


def _siblings_by_key(targets: tuple[Target, ...]) -> dict[str, tuple[str, ...]]:
    """Target id -> the other targets that use the same provider surface and API key."""
    groups: dict[tuple[str, str, str | None], list[str]] = {}
    for t in targets:
        groups.setdefault(t.account, []).append(t.id)
    return {tid: tuple(o for o in ids if o != tid) for ids in groups.values() for tid in ids}
