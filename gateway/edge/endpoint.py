"""One raw ASGI handler for every front-end API: the hot path.

Read and parse the body once (orjson), let the front-end turn it into the internal request,
resolve needs, plan, hand the fallback loop to the router, and answer through the front-end:
its body, its stream events, its error shape. Everything that is not the API's shape is here
once for all of them: auth, load shedding, limits, the stream commit point, deadlines, client
disconnects, shutdown, the last-line 500, metrics and the access log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from time import perf_counter
from typing import Any

from gateway.catalogue.body import parse_body
from gateway.catalogue.needs import Needs, resolve_needs
from gateway.edge import heap
from gateway.edge.asgi import (
    JSON_CT,
    HeaderReader,
    Receive,
    Scope,
    Send,
    body_too_large,
    header_map,
    new_request_id,
    read_body,
)
from gateway.edge.asgi import safe_header as _safe
from gateway.edge.client_addr import ClientAddress
from gateway.edge.lifecycle import ShuttingDown
from gateway.edge.relay import Relay, stream_failure_error
from gateway.edge.stream_guard import DEADLINE_CODE, IDLE_CODE, StreamGuard
from gateway.edge.watch import Entry, Watches
from gateway.errors import GatewayError, InternalError, NoCapableVariant
from gateway.frontends.base import FrontEnd, Headers, Inbound, StreamOut
from gateway.observability.timing import StageTimes
from gateway.observability.traces import RequestTrace
from gateway.routing import failures as fl
from gateway.routing.planner import Plan
from gateway.routing.router import RouteState, StreamSession
from gateway.services import Generation, Services
from gateway.tenancy.auth import Caller
from gateway.tenancy.shedding import Overloaded

log = logging.getLogger("glm_gateway.edge")
EXACT_IN_THREAD_BYTES = 60_000
_new = object.__new__


class _Ctx:
    """One request's state for the answer, the error paths and the access record. A plain
    class with class-level defaults: a request sets only what it reaches (a dataclass's
    ``__init__`` writing all twenty fields cost ~5,000 instructions a request)."""

    rs: RouteState | None = None
    inbound: Inbound | None = None
    out: StreamOut | None = None
    held: bytes = b""
    """A stream's opening not sent yet (:meth:`Endpoint._relay`): it goes with the next write,
    or before the error event if the request is cut short first."""
    status: int = 200
    stream: bool = False
    responded: bool = False
    done: bool = False
    disconnected: bool = False
    key_id: str = "-"
    client: str = "-"
    caller: Caller | None = None
    error: str | None = None
    extra: dict[str, Any] | None = None
    """Set on first use (:meth:`note`)."""
    watcher: asyncio.Task[None] | None = None
    trace: RequestTrace | None = None
    needs: Needs | None = None

    def __init__(self, request_id: str, started: float) -> None:
        # Endpoint.__call__ writes this out (tests/unit/test_edge_ctx.py holds the two together)
        self.request_id = request_id
        self.started = started
        self.times = StageTimes()

    def note(self, key: str, value: Any) -> None:
        """A value for the access record or the trace."""
        if self.extra is None:
            self.extra = {}
        self.extra[key] = value


_ATTEMPTS = tuple((b"x-glm-attempts", b"%d" % n) for n in range(16))
"""The ``X-GLM-Attempts`` header of 0 to 15 attempts, built once."""
_NO_TARGET = ((b"x-glm-variant", b"none"), (b"x-glm-provider", b"none"))


def no_capable_error(needs: Needs, plan: Plan) -> NoCapableVariant:
    why = "; ".join(
        f"{r.variant}{'@' + r.provider if r.provider else ''}: {', '.join(r.reasons)}"
        for r in plan.rejected
    )
    return NoCapableVariant(
        "No GLM-4 variant can serve this request. It needs: "
        + ", ".join(plan.unmet)
        + f". Rejected: {why}. Relax a need (X-GLM-* headers / route) or pick another model.",
        extra={
            "unmet": plan.unmet,
            "rejected": [
                {"variant": r.variant, "provider": r.provider, "reasons": list(r.reasons)}
                for r in plan.rejected
            ],
        },
    )


def bearer(headers: dict[str, str]) -> str | None:
    """The client's key: ``Authorization`` as sent, or Anthropic's ``x-api-key`` as a bearer."""
    auth = headers.get("authorization")
    if auth is None and (key := headers.get("x-api-key")):
        return "Bearer " + key
    return auth


class Endpoint:
    """``POST`` of one front-end API (chat completions, Messages ...)."""

    def __init__(
        self, services: Services, frontend: FrontEnd, generation: Generation | None = None
    ) -> None:
        self._s = services
        self._fe = frontend
        self.gate = services.gate
        """This process's in-flight cap (load shedding), shared by every front-end."""
        gen = self._gen = generation or services.generation
        """The config this endpoint serves (a reload builds new endpoints)."""
        self._config = gen.config
        self._router = gen.router
        self._auth = gen.auth
        self._limit = gen.config.gateway.server.max_body_bytes
        self._limits = gen.config.gateway.limits
        routing = gen.config.gateway.routing
        self._total_s = routing.total_timeout_s
        self._idle_s = routing.stream_idle_timeout_s
        """A stream's guard's settings, read once (a pydantic read costs ~10x a slot's)."""
        self._client = ClientAddress(gen.config.gateway.server.trusted_proxies)
        self._tracing = services.tracing
        self._in_flight = services.metrics.in_flight
        self._access = services.access
        self._api = frontend.name
        self._watches = Watches()
        """When to start each request's disconnect watch (one timer for them all)."""
        self._header_reader = HeaderReader()
        """The request's headers by name, what it decoded kept (per endpoint: per config)."""
        self._heads: dict[str, tuple[tuple[bytes, bytes], tuple[bytes, bytes]]] = {}
        """Target id -> its ``x-glm-variant`` and ``x-glm-provider`` headers."""

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, task: asyncio.Task[Any] | None = None
    ) -> None:
        """Serve one request. ``task``: the task running it, when the caller has it already
        (else looked up). One coroutine from the gate to the access record (a level of
        ``await`` costs ~1,000 instructions a request): the parts that only pass values along
        are written out here; the stream and the error paths have methods of their own."""
        gen, gate = self._gen, self.gate
        gen.enter()  # before any await: a reload cannot close this config's pools under us
        try:
            # contended: wait in the bounded queue, or be shed at once (answered)
            if not gate.take() and not await self._queued(scope, send):
                return
            try:
                headers = self._header_reader.read(scope)
                ctx = _new(_Ctx)  # _Ctx(request id, start), its __init__ written out
                ctx.request_id = headers.get("x-request-id") or new_request_id()
                ctx.started = perf_counter()
                ctx.times = StageTimes()
                ctx.client = self._client.of(scope, headers)
                if self._tracing is not None:
                    ctx.trace = self._tracing.start(headers)
                if task is None:
                    task = asyncio.current_task()
                watch: Entry | None = None
                large = False
                self._in_flight.inc()
                try:
                    auth, authorization = self._auth, headers.get("authorization")
                    if authorization is None:  # (bearer(headers), written out)
                        authorization = bearer(headers)
                    caller = auth.known(authorization) or await auth.identify(authorization)
                    ctx.caller = caller
                    ctx.key_id = caller.key_id
                    # read_body(receive, self._limit), written out for the usual body: one
                    # message (a coroutine fewer)
                    msg = await receive()
                    if msg["type"] == "http.disconnect" or msg.get("more_body", False):
                        raw = await read_body(receive, self._limit, msg)
                    else:
                        raw = msg.get("body") or b""
                        if len(raw) > self._limit:
                            raise body_too_large(self._limit)
                    del msg
                    large = len(raw) >= heap.LARGE_BODY_BYTES
                    body = parse_body(raw, self._limits)
                    del raw
                    inbound = ctx.inbound = self._fe.parse(body, headers)
                    ctx.stream = inbound.stream
                    chat = inbound.chat
                    needs = ctx.needs = resolve_needs(chat, headers, self._config)
                    if inbound.min_context and inbound.min_context > (needs.min_context or 0):
                        needs.min_context = inbound.min_context
                    if needs.prompt.upper > EXACT_IN_THREAD_BYTES:
                        # Large prompts may need exact tokenizing near a window edge (~25 ms per
                        # 200 KB): do it off the event loop before the (pure) planner asks.
                        await asyncio.to_thread(needs.prompt.exact)
                    router = self._router
                    pin_key = router.session(headers, inbound.session, chat)
                    # Plan, with stage marks: parse ends here; route excludes the state call.
                    if self._access.log_prompts:
                        ctx.note("prompt", chat.get("messages"))
                    times = ctx.times
                    planning = perf_counter()
                    times.parse_s = planning - ctx.started
                    rs = await router.admit(needs, caller, times, pin_key)
                    rs.trace = ctx.trace
                    times.route_s = perf_counter() - planning - times.before_s
                    times.planned = True
                    ctx.rs = rs
                    if not rs.plan.targets:
                        raise no_capable_error(needs, rs.plan)
                    deadline = router.deadline(needs)
                    assert task is not None
                    watch = self._watches.add(_start_watch, receive, task, ctx)
                    if ctx.stream:
                        session = await router.open_stream(chat, rs, deadline, inbound.native)
                        await self._relay(session, send, ctx, self._guard(deadline, needs))
                    else:
                        fe = self._fe
                        data = await router.complete(
                            chat, rs, deadline, inbound.native, not fe.renders_objects
                        )
                        if ctx.trace is not None:
                            ctx.note("answer", data or rs.answer)
                        answer = fe.render(data or rs.answer or {}, inbound, rs.native)
                        ctx.done = True
                        head = [JSON_CT, (b"content-length", b"%d" % len(answer))]
                        await send(
                            {
                                "type": "http.response.start",
                                "status": 200,
                                "headers": self._headers(ctx, head),
                            }
                        )
                        await send({"type": "http.response.body", "body": answer})
                except GatewayError as err:
                    ctx.status, ctx.error = err.status, err.code or err.type
                    if isinstance(err, NoCapableVariant) and err.extra:  # the log says which need
                        ctx.note("unmet", err.extra.get("unmet"))
                    if not ctx.responded:
                        ctx.done = True
                        await self._send_error(send, err, ctx)
                except asyncio.CancelledError:
                    if self._s.lifecycle.stopping and not ctx.disconnected and task is not None:
                        task.uncancel()  # cut by the shutdown: the upstream call is cancelled
                        stop = ShuttingDown()
                        await self._last_word(send, ctx, stop, 503, "server_shutting_down")
                        return
                    if not ctx.disconnected or task is None:
                        raise
                    task.uncancel()
                    ctx.status, ctx.error = 499, "client_disconnected"
                except Exception:
                    # The last line: a bug answers in the API's shape, logged here once (not
                    # re-raised, so the server does not log it again as a bare traceback).
                    log.exception("unhandled error on request %s", ctx.request_id)
                    bug = InternalError(ctx.request_id)
                    await self._last_word(send, ctx, bug, 500, "internal_error")
                finally:
                    if watch is not None:
                        watch.clear()  # it will not start (nothing of the request kept)
                    if ctx.watcher is not None:
                        # The watcher's frame holds ctx; once cancelled its traceback would too:
                        # drop the task so no cycle keeps this request's body alive until a
                        # full collection.
                        ctx.watcher.cancel()
                        ctx.watcher = None
                    self._in_flight.dec()
                    # await self._finish(ctx), written out (a coroutine fewer)
                    ended = perf_counter()
                    if ctx.rs is not None:
                        await self._router.record(ctx.rs)
                        ctx.times.after_s = perf_counter() - ended
                    self._finished(ctx, ended)
                    if large:
                        heap.after_large_body()
            finally:
                gate.leave()
        finally:
            gen.leave()

    async def _queued(self, scope: Scope, send: Send) -> bool:
        """The gate is contended: wait in its bounded queue. False: shed (and answered)."""
        started = perf_counter()
        try:
            await self.gate.wait()
        except Overloaded as err:
            await self._shed(scope, send, err, started)
            return False
        return True

    async def _shed(self, scope: Scope, send: Send, err: Overloaded, started: float) -> None:
        headers = header_map(scope)
        ctx = _Ctx(headers.get("x-request-id") or new_request_id(), started)
        ctx.status, ctx.error, ctx.done = err.status, err.code, True
        if self._tracing is not None:
            ctx.trace = self._tracing.start(headers)
        await self._send_error(send, err, ctx)
        await self._finish(ctx)

    def _guard(self, deadline: float, needs: Needs) -> StreamGuard:
        total = self._total_s
        if needs.timeout:
            total = min(total, needs.timeout)
        return StreamGuard(deadline, self._idle_s, total)

    def _headers(self, ctx: _Ctx, out: Headers) -> Headers:
        """``out`` (the head's first headers), then the gateway's own: the request id, where
        the answer came from, how it got there."""
        out.append((b"x-request-id", ctx.request_id[:200].encode("latin-1", "replace")))  # _safe
        rs = ctx.rs
        if rs is None:
            out += _NO_TARGET
            out.append(_ATTEMPTS[0])
        else:
            tried = rs.attempts
            target = rs.target
            if target is None and tried:
                target = tried[-1].target
            if target is None:
                out += _NO_TARGET
            else:
                pair = self._heads.get(target.id)
                if pair is None:
                    pair = self._heads[target.id] = (
                        (b"x-glm-variant", target.variant.id.encode()),
                        (b"x-glm-provider", target.provider.encode()),
                    )
                out += pair
            tries = len(tried)
            out.append(_ATTEMPTS[tries] if tries < 16 else (b"x-glm-attempts", b"%d" % tries))
            if tries != 1 or tried[0].failure is not None:  # else: answered at once
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

    async def _send_error(self, send: Send, err: GatewayError, ctx: _Ctx) -> None:
        status, body, extra = self._fe.error(err, ctx.request_id)
        headers = self._headers(ctx, [*extra])
        headers.extend((k.lower().encode(), _safe(v)) for k, v in err.headers.items())
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _relay(
        self, session: StreamSession, send: Send, ctx: _Ctx, guard: StreamGuard
    ) -> None:
        assert ctx.inbound is not None
        target = session.state.attempts[-1].target
        relay = Relay(session, target, ctx.times, guard)
        out = ctx.out = self._fe.stream(ctx.inbound, session.native is not None)
        if out.takes_objects:
            relay.take_objects()
        failure: fl.Failure | None = None

        def render(parts: list[bytes], objs: list[Any] | None) -> bytes:
            return out.relay(b"".join(parts)) if objs is None else out.relay_parts(parts, objs)

        async def body(data: bytes, more: bool) -> None:
            if ctx.held:
                data, ctx.held = ctx.held + data, b""
                await send({"type": "http.response.body", "body": data, "more_body": more})
                ctx.times.ttft_s = time.perf_counter() - ctx.started
            elif data or not more:
                await send({"type": "http.response.body", "body": data, "more_body": more})

        async def forward(parts: list[bytes], objs: list[Any] | None) -> None:
            # body(render(parts, objs), True), written out: this runs once per upstream read
            data = out.relay(b"".join(parts)) if objs is None else out.relay_parts(parts, objs)
            if ctx.held:
                data, ctx.held = ctx.held + data, b""
                await send({"type": "http.response.body", "body": data, "more_body": True})
                ctx.times.ttft_s = time.perf_counter() - ctx.started
            elif data:
                await send({"type": "http.response.body", "body": data, "more_body": True})

        async def send_opening() -> None:
            await body(b"", True)

        try:
            head = self._headers(ctx, [*self._fe.stream_headers])
            await send({"type": "http.response.start", "status": 200, "headers": head})
            ctx.responded = True
            # The opening waits for the events already read, if any (one write, not two).
            ctx.held = out.begin() + relay.prelude(out)
            if not ctx.held:  # nothing to open with: the first byte is the next events'
                ctx.times.ttft_s = time.perf_counter() - ctx.started
            failure = self._router.redacted(
                relay.failure or await relay.pump(forward, send_opening)
            )
            tail = b""
            if failure is not None:
                timed_out = failure.code in (DEADLINE_CODE, IDLE_CODE)
                ctx.status = 504 if timed_out else 502
                ctx.error = failure.code if timed_out else f"stream_{failure.cls.value}"
                tail = out.fail(stream_failure_error(failure, target))
            elif relay.held is not None:
                tail = render(*relay.held)
            ctx.done = True
            await body(tail, False)
        finally:
            await session.response.close()
            session.state.usage = relay.usage
            if ctx.trace is not None:
                ctx.note("finish", relay.finish_reason)
            self._router.stream_ended(session, failure)

    async def _last_word(
        self, send: Send, ctx: _Ctx, err: GatewayError, status: int, code: str
    ) -> None:
        """The answer to a request cut short (shutdown, a bug): an error in the API's shape, or
        inside a started stream its error event and the end of the body (never its clean end).
        Nothing is sent when the answer was already out."""
        if ctx.done:
            return
        ctx.done = True
        ctx.status, ctx.error = status, code
        try:
            if not ctx.responded:
                await self._send_error(send, err, ctx)
                return
            tail = ctx.out.fail(err) if ctx.out is not None else b""
            tail, ctx.held = ctx.held + tail, b""
            await send({"type": "http.response.body", "body": tail, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # the client is gone or the transport broke: nothing left to tell
            log.debug("could not tell %s how it ended", ctx.request_id, exc_info=True)

    async def _finish(self, ctx: _Ctx) -> None:
        # The answer is out: the duration ends here. Recording outcomes and settling the lease
        # happen after it (their time is the ``state`` stage, not the client's wait).
        ended = time.perf_counter()
        rs = ctx.rs
        if rs is not None:
            await self._router.record(rs)
            ctx.times.after_s = time.perf_counter() - ended
        self._finished(ctx, ended)

    def _finished(self, ctx: _Ctx, ended: float) -> None:
        """The access record and the trace of a request answered at ``ended``."""
        extra = ctx.extra
        self._access.finished(
            ctx.request_id,
            ctx.key_id,
            ctx.status,
            ctx.stream,
            ended - ctx.started,
            ctx.rs,
            ctx.error,
            ctx.times,
            extra.get("prompt") if extra else None,
            ctx.client,
            self._api,
            extra.get("unmet") if extra else None,
        )
        if ctx.trace is not None:
            self._trace(ctx, ctx.trace)

    def _trace(self, ctx: _Ctx, trace: RequestTrace) -> None:
        try:
            self._end_trace(ctx, trace)
        except Exception:  # the answer is out: a span is never worth more than a log line
            log.exception("could not record the trace of request %s", ctx.request_id)

    def _end_trace(self, ctx: _Ctx, trace: RequestTrace) -> None:
        extra = ctx.extra or {}
        trace.finish(
            request_id=ctx.request_id,
            api=self._fe.name,
            status=ctx.status,
            error=ctx.error,
            stream=ctx.stream,
            key_id=ctx.key_id,
            client=ctx.client,
            chat=ctx.inbound.chat if ctx.inbound is not None else None,
            needs=ctx.needs,
            rs=ctx.rs,
            times=ctx.times,
            answer=extra.get("answer"),
            finish_reason=extra.get("finish"),
        )


def _start_watch(receive: Receive, task: asyncio.Task[Any], ctx: _Ctx) -> None:
    if not ctx.done:
        ctx.watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, task, ctx))


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], ctx: _Ctx) -> None:
    """Cancel the handler when the client goes away before we finished answering."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            if not ctx.done:
                ctx.disconnected = True
                task.cancel()
            return
