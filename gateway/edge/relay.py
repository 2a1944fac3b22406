"""The relay of a committed stream: the upstream's events rewritten and forwarded.

The router hands over a stream once it has its first content token (the commit point). From
there :class:`Relay` rewrites each event (``model``; a host dialect's chunks normalised; the usage
chunk the gateway asked for hidden unless the client asked too), joins what one read delivered
into one write, checks a ``json_schema`` answer at its end, and watches the total deadline and
the idle limit (:class:`~gateway.edge.stream_guard.StreamGuard`). Its output is OpenAI chunk
bytes; a front-end's :class:`~gateway.frontends.base.StreamOut` turns them into its API's events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gateway.catalogue.target import Target
from gateway.edge.fastpath import BytePath, PlainText, PlainTexts
from gateway.edge.stream_guard import DEADLINE_CODE, IDLE_CODE, StreamGuard
from gateway.errors import GatewayError
from gateway.observability.timing import StageTimes
from gateway.providers.base import UpstreamConnectionError, UpstreamTimeout
from gateway.providers.dialects import StreamNormaliser, model_rewriter
from gateway.providers.dialects.stream import TWO_EVENTS
from gateway.routing import failures as fl
from gateway.routing.router import StreamSession
from gateway.routing.sse import event_json, first_choice, is_done

Out = Callable[[list[bytes], list[Any] | None], Awaitable[None]]
"""Where relayed events go (the front-end's translation, then the client): the bytes of each
rewritten event and, when the front-end takes them, the object each one was encoded from
(``None`` where there is none to give: a raw event, or bytes holding two events)."""


class Relay:
    """Rewrites and forwards a committed stream's events."""

    __slots__ = (
        "ends",
        "failure",
        "fast",
        "finish",
        "guard",
        "held",
        "last",
        "native",
        "norm",
        "objects",
        "raw",
        "replacements",
        "second",
        "session",
        "target",
        "texts",
        "times",
        "usage",
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
        self.replacements = _rewriter(target)
        self.texts: BytePath | None = None
        """Set with :meth:`take_objects`: plain chunks handed over as :class:`PlainText`."""
        self.fast: BytePath | None = None
        """Plain chunks (and, raw, every chunk with nothing special) relayed unparsed."""
        if session.native is None and self.raw:
            self.fast = BytePath(None, self.replacements)
        elif session.native is None and self.norm.passes_plain_chunks:
            self.fast = BytePath(_model_field(target.variant_id), self.replacements)
        self.failure: fl.Failure | None = None
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        """A finish reason seen in an event read whole (the one with usage, GLM's last)."""
        self.native = session.native
        """The host speaks the client's API: its events pass as they are (the front-end puts
        the client's model name back), watched only for errors, usage and their end."""
        self.ends: Callable[[bytes], bool] = self.native.ends if self.native else is_done
        self.objects = False
        """Set by the edge (:meth:`take_objects`) when the front-end translates objects."""
        self.last: Any = None
        """The object :meth:`rewrite` just encoded as one event, else None."""
        self.second: dict[str, Any] | None = None
        """Taking objects: the usage chunk :meth:`rewrite` just wrote after :attr:`last` (the
        event's two objects handed over, neither encoded nor parsed back), else None."""
        self.held: tuple[list[bytes], list[Any] | None] | None = None
        """The events of the read that ended the stream, left by :meth:`pump` for the caller to
        send with the end of the body (one write, not two)."""

    def prelude(self, out: Any) -> bytes:
        """The events read before the commit point, through the front-end's translation."""
        parts: list[bytes] = []
        objs: list[Any] = []
        quick = self.fast.one if self.fast is not None else _none  # None when taking objects
        texts = self.texts.text if self.texts is not None else _none  # set when taking them
        for event in self.session.prelude:
            passed = quick(event)
            if passed is not None:  # a plain chunk (the first content token): not re-encoded
                parts.append(passed)
                objs.append(None)
                continue
            passed = texts(event)
            if passed is not None:  # the same, for a front-end that reads objects: its text
                parts.append(b"")
                objs.append(PlainText(passed))
                continue
            self.last = self.second = None
            parts.append(self.rewrite(event))
            objs.append(self.last)
            if self.second is not None:
                parts.append(b"")
                objs.append(self.second)
        if self.objects:
            return bytes(out.relay_parts(parts, objs))
        return bytes(out.relay(b"".join(parts)))

    @property
    def finish_reason(self) -> str | None:
        """How the answer ended, when the stream said so in an event the relay parsed."""
        return self.norm.finish_reason or self.finish

    def take_objects(self) -> None:
        """The front-end reads the normalised objects: neither re-parse nor encode them."""
        self.objects = True
        self.norm.encode = False
        if self.fast is not None:  # plain chunks go to the front-end as their text
            self.texts = BytePath(None, ())
            self.fast = None

    def rewrite(self, event: bytes) -> bytes:
        if self.native is not None:
            return self._native(event)
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
        out = self.norm.chunk(obj)
        if self.objects:  # what the front-end would parse back out of ``out``
            if out is TWO_EVENTS:
                self.last, self.second = obj, self.norm.usage_chunk
            elif out.count(b"\n\n") == 1:
                self.last = obj
        return out

    def _native(self, event: bytes) -> bytes:
        assert self.native is not None
        if b'"error"' in event or b"usage" in event:
            obj = event_json(event)
            got = self.native.usage(obj)
            if got:
                self.usage = {**(self.usage or {}), **got}
            if isinstance(obj, dict) and obj.get("type") == "error":
                self.failure = self.failure or fl.classify_stream_event(obj)
                return b""
            failed = self.native.failed(obj)
            if failed is not None:  # e.g. GLM's network_error as a stop reason: not an answer
                self.failure = (
                    self.failure
                    or fl.classify_finish_reason(failed)
                    or fl.Failure(
                        fl.FailureClass.TRANSIENT, 200, failed, f"the host ended with {failed}"
                    )
                )
                return b""
        return event + b"\n\n"

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
            choice = first_choice(obj)
            if choice is not None and isinstance(choice.get("finish_reason"), str):
                self.finish = choice["finish_reason"]
        self.failure = self.failure or fl.stream_failure(obj)

    async def pump(
        self, out: Out, opening: Callable[[], Awaitable[None]] | None = None
    ) -> fl.Failure | None:
        """Relay until the end (None) or a failure. ``opening``: what sends the bytes the
        caller holds back (the stream's opening events), awaited before the first wait for the
        network; when the next events are already here they go with them instead (one write)."""
        guard = self.guard
        guard.start()
        try:
            return await self._pump(out, opening)
        except asyncio.CancelledError:
            failure = guard.tripped()  # the total deadline or the idle limit passed
            if failure is None:
                raise
            return failure
        finally:
            guard.stop()

    async def _pump(
        self, out_to: Out, opening: Callable[[], Awaitable[None]] | None
    ) -> fl.Failure | None:
        reader = self.session.reader
        guard = self.guard
        times = self.times
        fast = self.fast
        quick = fast.one if fast is not None else _none
        texts = self.texts.text if self.texts is not None else _none
        text_run = self.texts.text_run if self.texts is not None else None
        try:
            while True:
                # Two clock reads per read; the histograms are fed once per stream (_finish).
                event = None
                if opening is not None:  # the opening goes now unless events are here already
                    event = reader.pop_buffered()
                    if event is None:
                        guard.arm()
                        await opening()
                    opening = None
                waiting = time.perf_counter()
                if event is None:
                    guard.arm()
                    event = await reader.next_event()
                guard.last = now = time.perf_counter()
                # times.chunk_waited(now - waiting), written out (once per upstream read)
                waited = now - waiting
                times.relay_wait_s += waited
                times.chunks += 1
                if waited > times.gap_max_s:
                    times.gap_max_s = waited
                if event is None:
                    return fl.Failure(
                        fl.FailureClass.TRANSIENT, 200, None, "upstream stream ended without [DONE]"
                    )
                # Relay every event this read delivered in one send: one write, not one per
                # event (no added wait: only events already received are joined).
                out: list[bytes] = []
                objs: list[Any] | None = [] if self.objects else None
                done = False
                while event is not None:
                    passed = quick(event) if objs is None else texts(event)
                    if passed is not None:  # a plain chunk: neither a failure nor the end
                        if objs is None:
                            out.append(passed)
                        else:
                            out.append(b"")
                            objs.append(PlainText(passed))
                    else:
                        self.last = self.second = None
                        out.append(self.rewrite(event))
                        if objs is not None:
                            objs.append(self.last)
                        if self.failure is not None:
                            out.pop()
                            if objs is not None:
                                objs.pop()
                            break
                        if self.second is not None and objs is not None:
                            out.append(b"")
                            objs.append(self.second)
                        if self.ends(event):
                            done = True
                            break
                    if fast is not None and objs is None:  # the rest of this read at once
                        run = reader.pop_run(fast.run)
                        if run is not None:
                            out.append(run[0])
                            times.chunks += run[1]
                    elif text_run is not None and objs is not None:
                        got = reader.pop_run(text_run)
                        if got is not None:
                            out.append(b"")
                            objs.append(PlainTexts(got[0]))
                            times.chunks += got[1]
                    event = reader.pop_buffered()
                    if event is not None:
                        times.chunks += 1  # already here: no wait, still a chunk
                if done:  # done: no failure (one breaks the loop before the end is seen)
                    self.held = (out, objs) if out else None
                    return None
                if out:
                    guard.arm()
                    await out_to(out, objs)
                if self.failure is not None:
                    return self.failure
        except (UpstreamTimeout, UpstreamConnectionError) as exc:
            return fl.classify_exception(exc)


def _none(event: bytes) -> None:
    return None


_MODEL_FIELDS: dict[str, bytes] = {}
_REWRITERS: dict[tuple[str, str], tuple[tuple[bytes, bytes], ...]] = {}


def _rewriter(target: Target) -> tuple[tuple[bytes, bytes], ...]:
    """:func:`model_rewriter` of ``target``, made once per (model, variant): it encodes both
    names and builds four byte strings, the same for every stream of the deployment."""
    key = (target.model, target.variant_id)
    got = _REWRITERS.get(key)
    if got is None:
        got = _REWRITERS[key] = model_rewriter(target)
    return got


def _model_field(variant: str) -> bytes:
    """``"model":"<variant>"`` (made once per variant id)."""
    field = _MODEL_FIELDS.get(variant)
    if field is None:
        field = _MODEL_FIELDS[variant] = b'"model":' + orjson.dumps(variant)
    return field


def stream_failure_error(failure: fl.Failure, target: Any) -> GatewayError:
    if failure.code in (DEADLINE_CODE, IDLE_CODE):
        err = GatewayError(
            f"The stream from {target.provider} ({target.variant.id}) was stopped: "
            f"{failure.message}; the upstream request was cancelled.",
            code=failure.code,
        )
        err.type = "timeout_error"
        return err
    err = GatewayError(
        f"The upstream stream from {target.provider} ({target.variant.id}) failed after the "
        f"answer started: {failure.cls.value}: {failure.message}",
        code="stream_interrupted",
    )
    err.type = "upstream_error"
    return err
