"""A tiny Anthropic-shaped HTTP server on loopback that records every request a client sends.

Used to capture what real clients (Claude Code, the AI SDK) put on the wire. It answers:

- ``HEAD /`` and ``GET /``: 200, empty.
- ``GET /v1/models``: Anthropic's list shape with one ``claude-*`` model.
- ``POST /v1/messages`` (any query): a minimal valid ``Message``, streamed as Anthropic SSE when
  the body says ``"stream": true``. When the last user turn carries ``<<rec:{"name": ...,
  "input": {...}}>>`` and is not itself a tool result, the answer is that ``tool_use`` (stop
  reason ``tool_use``); otherwise text (``end_turn``).
- ``POST /v1/messages/count_tokens``: ``{"input_tokens": <bytes / 4>}``.
- anything else: 404 in Anthropic's error shape.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY_TEXT = "hi from the recorder"
DIRECTIVE = re.compile(r"<<rec:(\{.*?\})>>", re.S)
MODEL_ID = "claude-recorder-1"


def _last_user_turn(body: dict[str, Any]) -> tuple[str, bool]:
    """(text of the last user message, whether it carries a tool_result)."""
    msgs = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    users = [m for m in msgs if m.get("role") == "user"]
    if not users:
        return "", False
    content = users[-1].get("content")
    if isinstance(content, str):
        return content, False
    parts = [p for p in content or [] if isinstance(p, dict)]
    text = " ".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
    return text, any(p.get("type") == "tool_result" for p in parts)


def answer_blocks(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The content blocks and stop reason the recorder answers ``body`` with."""
    text, has_result = _last_user_turn(body)
    m = None if has_result else DIRECTIVE.search(text)
    if m is not None:
        call = json.loads(m.group(1))
        block = {
            "type": "tool_use",
            # Derived from the request, so a capture of the same run has the same ids.
            "id": "toolu_rec" + hashlib.sha256(text.encode()).hexdigest()[:16],
            "name": call["name"],
            "input": call.get("input", {}),
        }
        return [block], "tool_use"
    return [{"type": "text", "text": REPLY_TEXT}], "end_turn"


def message(body: dict[str, Any]) -> dict[str, Any]:
    blocks, stop = answer_blocks(body)
    return {
        "id": "msg_rec" + uuid.uuid4().hex[:16],
        "type": "message",
        "role": "assistant",
        "model": body.get("model", MODEL_ID),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5},
    }


def sse(body: dict[str, Any]) -> bytes:
    msg = message(body)
    blocks = msg.pop("content")
    stop = msg.pop("stop_reason")
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **msg,
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 12, "output_tokens": 1},
                },
            },
        )
    ]
    for i, b in enumerate(blocks):
        if b["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": b["text"]}
        else:
            start = {**b, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}
        events += [
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": start},
            ),
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": i}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()


class Recorder:
    """Runs the server in a thread; ``requests`` is every request seen, oldest first."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _record(self) -> Any:
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with recorder._lock:
                    recorder.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": [[k, v] for k, v in self.headers.items()],
                            "body": body,
                        }
                    )
                return body

            def _send(self, status: int, payload: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                self.send_header("request-id", "req_rec" + uuid.uuid4().hex[:12])
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def do_HEAD(self) -> None:
                self._record()
                self._send(200, b"", "text/plain")

            def do_GET(self) -> None:
                self._record()
                path = self.path.split("?", 1)[0]
                if path == "/v1/models":
                    model = {
                        "type": "model",
                        "id": MODEL_ID,
                        "display_name": "Recorder",
                        "created_at": "2026-01-01T00:00:00Z",
                    }
                    payload = {
                        "data": [model],
                        "has_more": False,
                        "first_id": MODEL_ID,
                        "last_id": MODEL_ID,
                    }
                    self._send(200, json.dumps(payload).encode(), "application/json")
                elif path == "/":
                    self._send(200, b"", "text/plain")
                else:
                    self._not_found()

            def do_POST(self) -> None:
                body = self._record()
                path = self.path.split("?", 1)[0]
                if path == "/v1/messages" and isinstance(body, dict):
                    if body.get("stream"):
                        self._send(200, sse(body), "text/event-stream")
                    else:
                        self._send(200, json.dumps(message(body)).encode(), "application/json")
                elif path == "/v1/messages/count_tokens":
                    tokens = max(1, len(json.dumps(body)) // 4)
                    self._send(
                        200, json.dumps({"input_tokens": tokens}).encode(), "application/json"
                    )
                else:
                    self._not_found()

            def _not_found(self) -> None:
                err = {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": "not recorded"},
                }
                self._send(404, json.dumps(err).encode(), "application/json")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
