"""``POST /v1/chat/completions``: the hot path, as a raw ASGI handler.

Parse the body once (orjson), resolve needs, plan, hand the loop to the router, relay the
answer. Streams are relayed event by event; only ``model`` is rewritten unless the host's
dialect needs normalising. After the first content byte a failure ends the stream with an
error event, never a clean ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.api.client_addr import ClientAddress
from gateway.api.stream_guard import DEADLINE_CODE, IDLE_CODE, StreamGuard
from gateway.catalogue.body import check_depth
from gateway.catalogue.needs import Needs, resolve_needs
from gateway.catalogue.schema import RequestLimits
from gateway.edge.asgi import (
    SSE_HEADERS,
    Receive,
    Scope,
    Send,
    header_map,
    new_request_id,
    read_body,
    safe_header,
    send_error,
    send_json,
)
from gateway.edge.lifecycle import ShuttingDown
from gateway.errors import GatewayError, InternalError, InvalidRequest, NoCapableVariant
from gateway.observability.timing import StageTimes
from gateway.providers.base import UpstreamConnectionError, UpstreamTimeout
from gateway.providers.dialects import StreamNormaliser, model_rewriter
from gateway.routing import failures as fl
from gateway.routing.planner import Plan
from gateway.routing.router import RouteState, StreamSession
from gateway.routing.sse import error_event, event_json, is_done
from gateway.services import Services
from gateway.tenancy.auth import Caller
from gateway.tenancy.shedding import Overloaded

_DEFAULT_LIMITS = RequestLimits()
log = logging.getLogger("glm_gateway.chat")
EXACT_IN_THREAD_BYTES = 60_000
WATCH_AFTER_S = 0.02
"""A request still running after this long gets a task that watches for the client going away
(and cancels the upstream call). Answers faster than that, most of them behind a fast host,
never pay for the task; a disconnect is still noticed within this delay."""


@dataclass(slots=True)
class _Ctx:
    request_id: str
    started: float
    rs: RouteState | None = None
    status: int = 200
    stream: bool = False
    responded: bool = False
    done: bool = False
    disconnected: bool = False
    key_id: str = "-"
    client: str = "-"
    caller: Caller | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    times: StageTimes = field(default_factory=StageTimes)
    watcher: asyncio.Task[None] | None = None


def parse_body(raw: bytes, limits: RequestLimits = _DEFAULT_LIMITS) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own ceiling (1024) is past any configured one
            raise InvalidRequest(
                "The request body is nested too deeply; this gateway accepts at most "
                f"{limits.max_json_depth} levels (limits.max_json_depth in gateway.yaml).",
                param="body",
                code="too_deep",
            ) from None
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}.", code="invalid_json"
        ) from None
    if not isinstance(obj, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    check_depth(raw, obj, limits)
    stream = obj.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream", code="invalid_type")
    return obj


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


class ChatEndpoint:
    def __init__(self, services: Services) -> None:
        self._s = services
        self.gate = services.gate
        """This process's in-flight cap (load shedding), shared by every upstream-calling
        endpoint."""
        self._config = services.config
        self._router = services.router
        self._limit = services.config.gateway.server.max_body_bytes
        self._limits = services.config.gateway.limits
        self._client = ClientAddress(services.config.gateway.server.trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self.gate
        if not gate.take():  # contended: wait in the bounded queue, or be shed at once
            started = time.perf_counter()
            try:
                await gate.wait()
            except Overloaded as err:
                await self._shed(scope, send, err, started)
                return
        try:
            await self._serve(scope, receive, send)
        finally:
            gate.leave()

    async def _shed(self, scope: Scope, send: Send, err: Overloaded, started: float) -> None:
        ctx = _Ctx(header_map(scope).get("x-request-id") or new_request_id(), started)
        ctx.status, ctx.error, ctx.done = err.status, err.code, True
        await send_error(send, err, self._headers(ctx))
        await self._finish(ctx)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        ctx = _Ctx(headers.get("x-request-id") or new_request_id(), time.perf_counter())
        ctx.client = self._client.of(scope, headers)
        task = asyncio.current_task()
        watch: asyncio.TimerHandle | None = None
        self._s.metrics.in_flight.inc()
        try:
            ctx.caller = await self._s.auth.identify(headers.get("authorization"))
            ctx.key_id = ctx.caller.key_id
            body = parse_body(await read_body(receive, self._limit), self._limits)
            ctx.stream = body.get("stream") is True
            needs = resolve_needs(body, headers, self._config)
            if needs.prompt.upper > EXACT_IN_THREAD_BYTES:
                # Large prompts may need exact tokenizing near a window edge (~25 ms per
                # 200 KB): do it off the event loop before the (pure) planner asks for it.
                await asyncio.to_thread(needs.prompt.exact)
            ctx.rs = await self._plan(body, needs, ctx)
            if not ctx.rs.plan.targets:
                raise no_capable_error(needs, ctx.rs.plan)
            deadline = self._router.deadline(needs)
            assert task is not None
            watch = asyncio.get_running_loop().call_later(
                WATCH_AFTER_S, _start_watch, receive, task, ctx
            )
            if ctx.stream:
                session = await self._router.open_stream(body, ctx.rs, deadline)
                await self._relay(session, send, ctx, self._guard(deadline, needs))
            else:
                data = await self._router.complete(body, ctx.rs, deadline)
                ctx.done = True
                await send_json(send, 200, data, self._headers(ctx))
        except GatewayError as err:
            ctx.status, ctx.error = err.status, err.code or err.type
            if not ctx.responded:
                ctx.done = True
                await send_error(send, err, self._headers(ctx))
        except asyncio.CancelledError:
            if self._s.lifecycle.stopping and not ctx.disconnected and task is not None:
                task.uncancel()  # cut by the shutdown: the upstream call is cancelled; say so
                await _shutting_down(send, ctx, self._headers(ctx))
                return
            if not ctx.disconnected or task is None:
                raise
            task.uncancel()
            ctx.status, ctx.error = 499, "client_disconnected"
        except Exception:
            # The last line: a bug answers in OpenAI's shape, logged here once (not re-raised,
            # so the server does not log it a second time as a bare traceback).
            log.exception("unhandled error on request %s", ctx.request_id)
            ctx.status, ctx.error = 500, "internal_error"
            await _answer_internal_error(send, ctx, self._headers)
        finally:
            if watch is not None:
                watch.cancel()
            if ctx.watcher is not None:
                ctx.watcher.cancel()
            self._s.metrics.in_flight.dec()
            await self._finish(ctx)

    async def _plan(self, body: dict[str, Any], needs: Needs, ctx: _Ctx) -> RouteState:
        """Plan, with stage marks: parse ends here; route excludes the state round trip."""
        if self._s.access.log_prompts:
            ctx.extra["prompt"] = body.get("messages")
        planning = time.perf_counter()
        ctx.times.parse_s = planning - ctx.started
        rs = await self._router.admit(needs, ctx.caller, ctx.times)
        ctx.times.route_s = time.perf_counter() - planning - ctx.times.before_s
        ctx.times.planned = True
        return rs

    def _guard(self, deadline: float, needs: Needs) -> StreamGuard:
        routing = self._config.gateway.routing
        total = min(routing.total_timeout_s, needs.timeout or routing.total_timeout_s)
        return StreamGuard(deadline, routing.stream_idle_timeout_s, total)

    def _headers(self, ctx: _Ctx) -> list[tuple[bytes, bytes]]:
        rs = ctx.rs
        target = rs.target if rs else None
        if target is None and rs and rs.attempts:
            target = rs.attempts[-1].target
        out = [
            (b"x-request-id", safe_header(ctx.request_id, 200)),
            (b"x-glm-variant", (target.variant.id if target else "none").encode()),
            (b"x-glm-provider", (target.provider if target else "none").encode()),
            (b"x-glm-attempts", str(len(rs.attempts) if rs else 0).encode()),
        ]
        if rs is not None:
            reason = rs.fallback_reason
            if reason:
                out.append((b"x-glm-fallback-reason", safe_header(reason)))
            out.extend((k.encode(), safe_header(v)) for k, v in rs.headers)
            if rs.adaptations and rs.target is not None:
                out.append((b"x-glm-adapted", safe_header(",".join(rs.adaptations))))
        return out

    async def _relay(
        self, session: StreamSession, send: Send, ctx: _Ctx, guard: StreamGuard
    ) -> None:
        target = session.state.attempts[-1].target
        relay = _Relay(session, target, ctx.times, guard)
        failure: fl.Failure | None = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*SSE_HEADERS, *self._headers(ctx)],
                }
            )
            ctx.responded = True
            first = b"".join(relay.rewrite(ev) for ev in session.prelude)
            await send({"type": "http.response.body", "body": first, "more_body": True})
            ctx.times.ttft_s = time.perf_counter() - ctx.started
            failure = self._router.redacted(relay.failure or await relay.pump(send))
            if failure is not None:
                timed_out = failure.code in (DEADLINE_CODE, IDLE_CODE)
                ctx.status = 504 if timed_out else 502
                ctx.error = failure.code if timed_out else f"stream_{failure.cls.value}"
                await send(
                    {
                        "type": "http.response.body",
                        "body": _stream_error(failure, target),
                        "more_body": True,
                    }
                )
            ctx.done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await session.response.close()
            session.state.usage = relay.usage
            self._router.stream_ended(session, failure)

    async def _finish(self, ctx: _Ctx) -> None:
        # The answer is out: the duration ends here. Recording outcomes and settling the lease
        # happen after it (their time is the ``state`` stage, not the client's wait).
        ended = time.perf_counter()
        rs = ctx.rs
        if rs is not None:
            await self._router.record(rs)
            ctx.times.after_s = time.perf_counter() - ended
        self._s.access.emit(
            request_id=ctx.request_id,
            key_id=ctx.key_id,
            status=ctx.status,
            stream=ctx.stream,
            duration_s=ended - ctx.started,
            rs=rs,
            error=ctx.error,
            times=ctx.times,
            prompt=ctx.extra.get("prompt"),
            client=ctx.client,
        )


class _Relay:
    """Rewrites and forwards a committed stream's events."""

    __slots__ = (
        "failure", "guard", "norm", "raw", "replacements", "session", "target", "times", "usage",
    )  # fmt: skip

    def __init__(
        self, session: StreamSession, target: Any, times: StageTimes, guard: StreamGuard
    ) -> None:
        self.session = session
        self.guard = guard
        self.times = times
        self.target = target
        self.norm = StreamNormaliser(
            target, include_usage=session.include_usage, collect_content=session.guard is not None
        )
        self.raw = self.norm.raw
        self.replacements = model_rewriter(target)
        self.failure: fl.Failure | None = None
        self.usage: dict[str, Any] | None = None

    def rewrite(self, event: bytes) -> bytes:
        if is_done(event):
            return self._done() + event + b"\n\n"
        if self.raw:
            for old, new in self.replacements:
                event = event.replace(old, new)
            special = b"network_error" in event or b'"error"' in event
            if special or b'"usage":{' in event or b'"usage": {' in event:
                obj = event_json(event)
                self._inspect(obj)
                if not self.norm.keep_raw(obj):
                    return b""  # the usage chunk the gateway asked for, not the client
            return event + b"\n\n"
        obj = event_json(event)
        if not isinstance(obj, dict):
            return event + b"\n\n"
        self._inspect(obj)
        return self.norm.chunk(obj)

    def _done(self) -> bytes:
        """Held-back text; a json_schema answer is checked against its schema here."""
        tail = self.norm.close()
        guard = self.session.guard
        if guard is not None and self.failure is None:
            self.failure = guard.check_text(self.norm.content(), self.norm.finish_reason)
        return tail

    def _inspect(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        self.failure = self.failure or fl.stream_failure(obj)

    async def pump(self, send: Send) -> fl.Failure | None:
        guard = self.guard
        guard.start()
        try:
            return await self._pump(send)
        except asyncio.CancelledError:
            failure = guard.tripped()  # the total deadline or the idle limit passed
            if failure is None:
                raise
            return failure
        finally:
            guard.stop()

    async def _pump(self, send: Send) -> fl.Failure | None:
        reader = self.session.reader
        guard = self.guard
        try:
            while True:
                # Two clock reads per event; the histograms are fed once per stream (_finish).
                waiting = time.perf_counter()
                event = await reader.next_event()
                guard.last = now = time.perf_counter()
                self.times.chunk_waited(now - waiting)
                if event is None:
                    return fl.Failure(
                        fl.FailureClass.TRANSIENT, 200, None, "upstream stream ended without [DONE]"
                    )
                # Relay every event this read delivered in one send: one write, not one per
                # event (no added wait: only events already received are joined).
                out: list[bytes] = []
                done = False
                while event is not None:
                    out.append(self.rewrite(event))
                    if self.failure is not None:
                        out.pop()
                        break
                    if is_done(event):
                        done = True
                        break
                    event = reader.pop_buffered()
                    if event is not None:
                        self.times.chunk_waited(0.0)  # already here: no wait, still a chunk
                if out:
                    await send(
                        {"type": "http.response.body", "body": b"".join(out), "more_body": True}
                    )
                if self.failure is not None:
                    return self.failure
                if done:
                    return None
        except (UpstreamTimeout, UpstreamConnectionError) as exc:
            return fl.classify_exception(exc)


def _stream_error(failure: fl.Failure, target: Any) -> bytes:
    if failure.code in (DEADLINE_CODE, IDLE_CODE):
        err = GatewayError(
            f"The stream from {target.provider} ({target.variant.id}) was stopped: "
            f"{failure.message}; the upstream request was cancelled.",
            code=failure.code,
        )
        err.type = "timeout_error"
        return error_event(err.body_bytes())
    err = GatewayError(
        f"The upstream stream from {target.provider} ({target.variant.id}) failed after the "
        f"answer started: {failure.cls.value}: {failure.message}",
        code="stream_interrupted",
    )
    err.type = "upstream_error"
    return error_event(err.body_bytes())


async def _answer_internal_error(send: Send, ctx: _Ctx, headers: Any) -> None:
    err = InternalError(ctx.request_id)
    try:
        if not ctx.responded:
            ctx.done = True
            await send_error(send, err, headers(ctx))
        elif not ctx.done:  # mid-stream: an error event, never a clean end
            ctx.done = True
            await send({"type": "http.response.body", "body": error_event(err.body_bytes())})
    except Exception:  # the client is gone or the transport broke: nothing left to tell
        log.debug("could not send the 500 for %s", ctx.request_id, exc_info=True)


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


async def _shutting_down(send: Send, ctx: _Ctx, headers: list[tuple[bytes, bytes]]) -> None:
    """The answer to a request the shutdown cut: 503 + Retry-After, or inside a started stream
    an error event and the end of the body (no ``[DONE]``: the answer is not complete)."""
    if ctx.done:
        return  # the answer was already out: nothing to correct
    ctx.done = True
    ctx.status, ctx.error = 503, "server_shutting_down"
    err = ShuttingDown()
    if not ctx.responded:
        await send_error(send, err, headers)
        return
    await send(
        {"type": "http.response.body", "body": error_event(err.body_bytes()), "more_body": True}
    )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
