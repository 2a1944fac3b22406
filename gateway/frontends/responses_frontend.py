"""OpenAI Responses (``POST /v1/responses``) on the front-end Protocol.

The translation lives in :mod:`.responses` (request, answer) and :mod:`.responses_stream`
(events); this class puts it on :class:`~gateway.frontends.base.FrontEnd` for the edge: what the
gateway ignored reported in ``X-GLM-Ignored``, usage always asked of the upstream stream,
errors in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.edge.fastpath import PlainText, PlainTexts
from gateway.errors import GatewayError
from gateway.frontends.base import (
    JSON_HEADERS,
    SSE_HEADERS,
    Headers,
    Inbound,
    body_session,
    is_done,
    sse_data,
)
from gateway.frontends.responses import ResponsesRequest, error_body, from_chat, to_chat
from gateway.frontends.responses_stream import ResponsesStream
from gateway.frontends.responses_tools import WebSearch

_DONE = b"data: [DONE]\n\n"
"""The relay's ``[DONE]`` event as it hands it over, alone."""


class _ResponsesOut:
    __slots__ = ("_s",)
    takes_objects = True

    def __init__(self, stream: ResponsesStream) -> None:
        self._s = stream

    def begin(self) -> bytes:
        return self._s.start()

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
        if len(objs) == 2 and len(parts) == 2:  # the usual read: a text, then a run of them
            first, rest = objs
            if type(first) is PlainText and type(rest) is PlainTexts:
                return self._s.texts([first.quoted, *rest.quoted])  # as the loop below does
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
            if isinstance(obj, dict):
                out.append(self._s.feed(obj))
            elif part == _DONE:  # what relay would make of it: the end
                out.append(self._s.end())
            elif part:
                out.append(self.relay(part))
        if run is not None:
            out.append(self._s.texts(run))
        return b"".join(out)  # one piece (the usual read): itself, not a copy

    def fail(self, err: GatewayError) -> bytes:
        return self._s.fail(err.code or err.type, err.message, rate_limited=err.status == 429)


class ResponsesFrontEnd:
    name = "responses"
    stream_headers: Headers = SSE_HEADERS
    renders_objects = True

    def __init__(self, key: bytes, web_search: WebSearch = "drop") -> None:
        self._key = key
        self._web_search: WebSearch = web_search

    def parse(self, body: dict[str, Any], headers: Mapping[str, str]) -> Inbound:
        req = to_chat(body, key=self._key, web_search=self._web_search)
        if req.stream:  # response.completed reports usage: always ask the host for it
            req.chat["stream_options"] = {"include_usage": True}
        extra = [("x-glm-ignored", ",".join(req.ignored))] if req.ignored else []
        if body.get("store") is True:  # accepted, but this gateway keeps no state
            extra.append(("x-glm-stored", "false: stateless gateway, nothing was stored"))
        inbound = Inbound(req.chat, req.stream, extra, None, req)
        inbound.session = body_session(body)
        return inbound

    def render(
        self, answer: bytes | dict[str, Any], inbound: Inbound, native: bool = False
    ) -> bytes:
        req: ResponsesRequest = inbound.state
        obj = answer if isinstance(answer, dict) else orjson.loads(answer)
        return orjson.dumps(from_chat(obj, req))

    def stream(self, inbound: Inbound, native: bool = False) -> _ResponsesOut:
        return _ResponsesOut(ResponsesStream(inbound.state))

    def error(self, err: GatewayError, request_id: str) -> tuple[int, bytes, Headers]:
        return err.status, error_body(err), JSON_HEADERS
