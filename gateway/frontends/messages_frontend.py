"""Anthropic Messages (``POST /v1/messages``) on the front-end Protocol.

The translation itself lives in :mod:`.messages` (request and answer) and
:mod:`.messages_stream` (events); this class puts it on :class:`~gateway.frontends.base.FrontEnd`
for the edge: ``claude-*`` names mapped through the configured table (longest prefix wins), what
the gateway ignored reported in ``X-GLM-Ignored``, usage always asked of the upstream stream,
errors in Anthropic's shape (529 ``overloaded_error`` when every candidate was out of capacity).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from gateway.edge.fastpath import PlainText, PlainTexts
from gateway.errors import GatewayError, UpstreamsFailed
from gateway.frontends.base import (
    JSON_HEADERS,
    SSE_HEADERS,
    Headers,
    Inbound,
    claude_session,
    is_done,
    sse_data,
)
from gateway.frontends.messages import (
    LONG_CONTEXT_NEED,
    ClaudeModels,
    MessagesRequest,
    error_for,
    from_chat,
    to_chat,
)
from gateway.frontends.messages_native import MessagesNative
from gateway.frontends.messages_stream import MessagesStream, event

_LONG_BETA: Final = "context-1m-"
"""``anthropic-beta: context-1m-2025-08-07``: the long-context tier, as a ``[1m]`` suffix asks."""


_new: Final = object.__new__


def _overloaded(err: GatewayError) -> bool:
    """Every candidate out of capacity, or this process shedding load (``overloaded``): 529,
    which Claude Code retries as it does Anthropic's own."""
    capacity = isinstance(err, UpstreamsFailed) and err.status == 503
    return capacity or (err.status == 503 and err.code == "overloaded")


class _MessagesOut:
    __slots__ = ("_s",)
    takes_objects = True

    def __init__(self, stream: MessagesStream) -> None:
        self._s = stream

    def begin(self) -> bytes:
        return self._s.start(0) + self._s.ping()

    def relay(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        feed = self._s.feed
        for ev in chunk.split(b"\n\n"):
            if not ev:
                continue
            if ev.startswith(b"data: {"):  # the relay's own form: one line, one object
                try:
                    obj = orjson.loads(memoryview(ev)[6:])  # no copy of the payload
                except orjson.JSONDecodeError:
                    obj = sse_data(ev)
            elif is_done(ev):
                out.append(self._s.end())
                continue
            else:
                obj = sse_data(ev)
            if isinstance(obj, dict):
                out.append(feed(obj))
        return b"".join(out)

    def relay_parts(self, parts: list[bytes], objs: list[Any]) -> bytes:
        out: list[bytes] = []
        run: list[bytes] | None = None
        """Texts in a row (``PlainText``, ``PlainTexts``: gateway/edge/fastpath.py), written
        at once by ``texts`` before the next other event."""
        for part, obj in zip(parts, objs, strict=True):
            kind = type(obj)
            if kind is PlainText:
                run = [obj.quoted] if run is None else [*run, obj.quoted]
                continue
            if kind is PlainTexts:
                run = obj.quoted if run is None else run + obj.quoted
                continue
            if run is not None:
                out.append(self._s.texts(run))
                run = None
            if obj is not None:
                out.append(self._s.feed(obj))
            elif part:
                out.append(self.relay(part))
        if run is not None:
            out.append(self._s.texts(run))
        return b"".join(out)  # one piece (the usual read): itself, not a copy

    def fail(self, err: GatewayError) -> bytes:
        status, body = error_for(err, overloaded=_overloaded(err))
        etype = orjson.loads(body)["error"]["type"]
        return self._s.error(status, etype, err.message)


class _NativeOut:
    """A host's own Messages stream: passed on, the client's model name put back."""

    __slots__ = ("_requested", "_started")
    takes_objects = False

    def __init__(self, requested: str) -> None:
        self._requested = orjson.dumps(requested)
        self._started = False

    def begin(self) -> bytes:
        return b""

    def relay_parts(self, parts: list[bytes], objs: list[Any]) -> bytes:
        return self.relay(b"".join(parts))

    def relay(self, chunk: bytes) -> bytes:
        if self._started or b"message_start" not in chunk:
            return chunk
        self._started = True
        head, sep, rest = chunk.partition(b"\n\n")
        obj = sse_data(head)
        if isinstance(obj, dict) and isinstance(obj.get("message"), dict):
            obj["message"]["model"] = orjson.loads(self._requested)
            head = event("message_start", obj).rstrip(b"\n")
        return head + sep + rest

    def fail(self, err: GatewayError) -> bytes:
        _, body = error_for(err, overloaded=_overloaded(err))
        return event("error", orjson.loads(body))


class MessagesFrontEnd:
    name = "messages"
    stream_headers: Headers = SSE_HEADERS
    renders_objects = True

    def __init__(
        self, claude_models: Mapping[str, str], thinking_key: bytes, max_output: int = 32000
    ) -> None:
        self._models = ClaudeModels(claude_models)
        self._key = thinking_key
        self._max_output = max_output

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Inbound:
        req = to_chat(body, self._models, thinking_key=self._key)
        chat = req.chat
        if req.stream:  # the stream's message_delta reports usage: always ask the host for it
            chat["stream_options"] = {"include_usage": True}
        ignored = req.ignored
        # a native host gets the hints the translation ignores: only the clamp applies there
        native_headers: list[tuple[str, str]] = []
        if req.max_tokens > self._max_output:  # a ceiling set high: ask what a host can give
            chat["max_tokens"] = self._max_output
            clamped = f"max_tokens=clamped:{self._max_output}"
            ignored = [*ignored, clamped]
            native_headers = [("x-glm-ignored", clamped)]
            # the native host too: the plan checked windows against prompt + the clamped value
            body = {**body, "max_tokens": self._max_output}
        need = req.context_need
        if _LONG_BETA in headers.get("anthropic-beta", ""):  # Claude Code's form of "[1m]"
            need = max(need or 0, LONG_CONTEXT_NEED)
        # built slot by slot: the dataclass call costs ~1k instructions more (see plain_inbound)
        inbound: Inbound = _new(Inbound)
        inbound.chat = chat
        inbound.stream = req.stream
        inbound.headers = [("x-glm-ignored", ",".join(ignored))] if ignored else []
        inbound.min_context = need
        inbound.state = req
        inbound.native = MessagesNative(body, headers)
        inbound.native_headers = native_headers
        # no ``metadata``, no session (and no call to learn it)
        inbound.session = claude_session(body) if "metadata" in body else None
        return inbound

    def render(
        self, answer: bytes | dict[str, Any], inbound: Inbound, native: bool = False
    ) -> bytes:
        req: MessagesRequest = inbound.state
        obj = answer if isinstance(answer, dict) else orjson.loads(answer)
        if native:  # the host's own Message: only the model name goes back to the client's
            obj["model"] = req.requested_model
            return orjson.dumps(obj)
        message = from_chat(
            obj,
            req.requested_model,
            stop_sequences=req.stop_sequences,
            thinking_key=self._key,
        )
        return orjson.dumps(message)

    def stream(self, inbound: Inbound, native: bool = False) -> _MessagesOut | _NativeOut:
        req: MessagesRequest = inbound.state
        if native:
            return _NativeOut(req.requested_model)
        return _MessagesOut(
            MessagesStream(
                req.requested_model, thinking_key=self._key, stop_sequences=req.stop_sequences
            )
        )

    def error(self, err: GatewayError, request_id: str) -> tuple[int, bytes, Headers]:
        status, body = error_for(err, overloaded=_overloaded(err), request_id=request_id)
        return status, body, JSON_HEADERS
