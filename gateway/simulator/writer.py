"""How the simulator writes answers that take time: SSE with delays and cuts, malformed
answers, trickles that never end, hangs. Each one is counted on the app's :class:`StreamBook`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from gateway.simulator.behaviour import StreamPlan
from gateway.simulator.dialects import ErrorReply
from gateway.simulator.faults import Rule
from gateway.simulator.malformed import JSON, SSE, Wire
from gateway.simulator.streams import Ending, StreamBook

HANG_POLL_S = 0.05


class Holder(Protocol):
    """What the writers need of the simulator's state."""

    streams: StreamBook
    closing: bool


def rule_headers(rule: Rule | None) -> dict[str, str]:
    """``Retry-After`` when the rule sets one."""
    if rule is None or rule.retry_after is None:
        return {}
    return {"Retry-After": f"{rule.retry_after:g}"}


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``obj`` as an ``application/json`` response."""
    return web.Response(status=status, body=orjson.dumps(obj), content_type=JSON, headers=headers)


def error_response(reply: ErrorReply, rule: Rule | None = None) -> web.Response:
    """An error answer, with the rule's ``Retry-After`` when it sets one."""
    return json_response(reply.body, reply.status, {**reply.headers, **rule_headers(rule)})


FaultShape = Callable[[int, str | None, str | None], ErrorReply]
"""Builds a fault's error answer from (status, code, message) in the surface's own shape."""


async def fault_head(
    request: web.Request, state: Holder, rule: Rule, stream: bool, shape: FaultShape
) -> web.StreamResponse | None:
    """Apply the parts of a rule that act before the answer; a response ends the request."""
    if rule.latency_ms > 0:
        await asyncio.sleep(rule.latency_ms / 1000)
    if rule.hang:
        state.streams.opened += 1
        try:
            await until_gone(request, state)
        finally:
            state.streams.ended("client_gone")
        return web.Response(status=499)
    if rule.is_error:
        if rule.body is not None:
            return error_response(ErrorReply(rule.status or 500, rule.body), rule)
        return error_response(shape(rule.status or 500, rule.code, rule.message), rule)
    if rule.cut_after_chunks is not None and not stream and rule.malformed is None:
        abort(request)
        return web.Response(status=499)
    return None


def abort(request: web.Request) -> None:
    """Drop the connection without ending the answer."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def until_gone(request: web.Request, state: Holder) -> None:
    """Wait until the client closes the connection or the simulator stops."""
    while not state.closing:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(HANG_POLL_S)


async def send_plan(
    request: web.Request, state: Holder, plan: StreamPlan, rule: Rule | None
) -> web.StreamResponse:
    """Send ``plan`` as SSE, applying the rule's cut (and, in :func:`send_wire`, its delays)."""
    cut = rule.cut_after_chunks if rule is not None else None
    if plan.error:
        cut = cut or 0
    drop = cut is not None and rule is not None and rule.finish_reason is None and not plan.error
    body = plan.body if cut is None else plan.body[: max(cut, 0)]
    events = plan.head + body + (plan.error or ([] if drop else plan.tail))
    return await send_wire(request, state, Wire(200, SSE, events, abort=drop), rule)


async def send_wire(
    request: web.Request, state: Holder, wire: Wire, rule: Rule | None
) -> web.StreamResponse:
    """Write ``wire`` part by part with the rule's ttft and chunk delay, counting it."""
    resp = web.StreamResponse(status=wire.status, headers=rule_headers(rule))
    resp.content_type = wire.content_type
    if wire.content_type == SSE:
        resp.headers["Cache-Control"] = "no-cache"
    if wire.length is not None:
        resp.content_length = wire.length
    ttft = rule.ttft_ms if rule is not None else 0.0
    gap = rule.chunk_delay_ms / 1000 if rule is not None else 0.0
    how: Ending = "client_gone"
    state.streams.opened += 1
    try:
        await resp.prepare(request)  # may find the client gone already (it hung up after sending)
        if ttft > 0:
            await asyncio.sleep(ttft / 1000)
        if gap > 0:
            for i, part in enumerate(wire.parts):
                if i:
                    await asyncio.sleep(gap)
                await resp.write(part)
        else:
            await resp.write(b"".join(wire.parts))
        if wire.abort:
            abort(request)
            how = "cut"
            return resp
        await resp.write_eof()
        how = "completed"
    except ConnectionError:
        pass  # the client went away; nothing left to send it (not a server error to log)
    finally:
        state.streams.ended(how)
    return resp


async def trickle(
    request: web.Request, state: Holder, rule: Rule, plan: StreamPlan | None
) -> web.StreamResponse:
    """Never finish: a content chunk (non-streams: a space) every ``trickle_ms``."""
    resp = web.StreamResponse(headers=rule_headers(rule))
    resp.content_type = SSE if plan is not None else JSON
    piece = b" "
    if plan is not None:
        piece = plan.body[0] if plan.body else plan.head[0]
    state.streams.opened += 1
    try:
        await resp.prepare(request)
        if rule.ttft_ms > 0:
            await asyncio.sleep(rule.ttft_ms / 1000)
        if plan is not None:
            await resp.write(b"".join(plan.head))
        while not state.closing:
            await resp.write(piece)
            await asyncio.sleep(rule.trickle_ms / 1000)
    except ConnectionError:
        pass
    finally:
        state.streams.ended("client_gone")
    return resp
