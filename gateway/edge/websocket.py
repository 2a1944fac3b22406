"""Responses over WebSocket (``/v1/responses``): each ``response.create`` message is one request
through the same edge handler as ``POST /v1/responses``, its stream events sent back as text
messages. Several run in sequence on one connection; the key comes from the upgrade's headers.

The gateway keeps no state, so a ``previous_response_id`` is answered with an error event
``previous_response_not_found`` and the connection stays open for the next message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from gateway.edge.asgi import Message, Receive, Scope, Send
from gateway.edge.endpoint import Endpoint

PATH = "/v1/responses"


def _error(code: str, message: str, status: int = 400, param: str | None = None) -> str:
    err = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
    return _error_event(status, err)


def _error_event(status: int, err: dict[str, Any]) -> str:
    """An Open Responses ``error`` event: ``sequence_number`` 0 (it is the only event of that
    ``response.create``) and an error payload with ``type``, ``code``, ``message``, ``param``."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    payload = {"type": kind, "code": None, "param": None, **err}
    payload["message"] = str(payload.get("message") or f"HTTP {status}")
    event = {"type": "error", "sequence_number": 0, "status": status, "error": payload}
    return orjson.dumps(event).decode()


class ResponsesSocket:
    def __init__(self, endpoint: Callable[[], Endpoint]) -> None:
        self._endpoint = endpoint
        """The edge handler for the next message (a config reload may replace it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            if text is None:
                text = (msg.get("bytes") or b"").decode("utf-8", "replace")
            reply = _check(text)
            if isinstance(reply, str):
                await send({"type": "websocket.send", "text": reply})
                continue
            await self._one(scope, reply, send)

    async def _one(self, scope: Scope, body: dict[str, Any], send: Send) -> None:
        """One ``response.create``: the edge handler on a request made of the message."""
        http: Scope = {
            **{k: v for k, v in scope.items() if k not in ("type", "subprotocols")},
            "type": "http",
            "method": "POST",
            "path": PATH,
            "query_string": b"",
            "http_version": "1.1",
        }
        done = asyncio.Event()
        sent = [False]

        async def receive() -> Message:
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        out = _Frames(send)
        try:
            await self._endpoint()(http, receive, out)
        finally:
            done.set()
        await out.flush()


def _check(text: str) -> dict[str, Any] | str:
    """The request body of a ``response.create`` message, or the error event to send."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _error("invalid_json", "The message is not valid JSON.")
    if not isinstance(obj, dict) or obj.get("type") != "response.create":
        return _error(
            "invalid_type", 'Send {"type": "response.create", ...} messages.', param="type"
        )
    if obj.get("previous_response_id"):
        return _error(
            "previous_response_not_found",
            "This gateway keeps no state: no previous response can be continued; send the "
            "whole input.",
            param="previous_response_id",
        )
    body = {k: v for k, v in obj.items() if k != "type"}
    body["stream"] = True
    return body


class _Frames:
    """An ASGI ``send`` for the edge handler that turns its answer into WebSocket messages: each
    SSE event's JSON as one text message; an error answer as one ``error`` event."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._status = 200
        self._buf = b""

    async def __call__(self, msg: Message) -> None:
        if msg["type"] == "http.response.start":
            self._status = msg["status"]
            return
        self._buf += msg.get("body", b"")
        if self._status != 200:
            return  # an error answer: sent whole at the end
        while b"\n\n" in self._buf:
            frame, self._buf = self._buf.split(b"\n\n", 1)
            at = frame.find(b"data:")
            if at >= 0 and frame[at + 5 :].strip() != b"[DONE]":
                await self._send(
                    {"type": "websocket.send", "text": frame[at + 5 :].strip().decode()}
                )

    async def flush(self) -> None:
        if self._status == 200 or not self._buf:
            return
        try:
            err = orjson.loads(self._buf).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            err = None
        if not isinstance(err, dict):
            err = {"message": self._buf.decode("utf-8", "replace")}
        await self._send({"type": "websocket.send", "text": _error_event(self._status, err)})
