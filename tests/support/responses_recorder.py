"""A tiny OpenAI-Responses-shaped HTTP server on loopback that records every request it gets.

The sibling of tests/support/anthropic_recorder.py, for the clients that speak Responses (Codex
CLI, the AI SDK's OpenAI provider). It answers:

- ``HEAD /`` and ``GET /``: 200, empty.
- ``GET /v1/models``: OpenAI's list shape with one model.
- ``POST /v1/responses``: a minimal valid ``Response``, streamed as Responses SSE
  (``response.created`` ... ``response.completed``) when the body says ``"stream": true``. When
  the last input item is a user message carrying ``<<rec:{"name": ..., "arguments": {...}}>>``,
  the answer is that ``function_call``; otherwise (also after a ``function_call_output``) text.
- ``POST /v1/responses/compact``: ``{"output": [...]}``: the request's user messages kept and a
  ``compaction`` item standing for the rest.
- anything else: 404 in OpenAI's error shape.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY_TEXT = "hi from the recorder"
DIRECTIVE = re.compile(r"<<rec:(\{.*?\})>>", re.S)
MODEL_ID = "glm-recorder-1"


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    inp = body.get("input")
    if isinstance(inp, str):
        return [{"type": "message", "role": "user", "content": inp}]
    return [i for i in inp or [] if isinstance(i, dict)]


def _text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return " ".join(
        str(p.get("text", "")) for p in content or [] if isinstance(p, dict) and "text" in p
    )


def output_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The output items the recorder answers ``body`` with (all ``completed``)."""
    items = _items(body)
    last = items[-1] if items else {}
    m = None
    if last.get("role") == "user" and last.get("type", "message") == "message":
        m = DIRECTIVE.search(_text(last))
    if m is not None:
        call = json.loads(m.group(1))
        # Derived from the request, so a capture of the same run has the same ids.
        digest = hashlib.sha256(_text(last).encode()).hexdigest()[:16]
        return [
            {
                "type": "function_call",
                "id": "fc_rec" + digest,
                "call_id": "call_rec" + digest,
                "name": call["name"],
                "arguments": json.dumps(call.get("arguments", {})),
                "status": "completed",
            }
        ]
    text = {"type": "output_text", "text": REPLY_TEXT, "annotations": [], "logprobs": []}
    return [
        {
            "type": "message",
            "id": "msg_rec" + uuid.uuid4().hex[:16],
            "status": "completed",
            "role": "assistant",
            "content": [text],
        }
    ]


def response(body: dict[str, Any], output: list[dict[str, Any]], status: str) -> dict[str, Any]:
    # Input tokens estimated as bytes / 4: Codex decides when to compact from the usage it is
    # told, so a constant would never trigger compaction.
    tokens = max(1, len(json.dumps(body.get("input"))) // 4)
    return {
        "id": "resp_rec" + uuid.uuid4().hex[:16],
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model", MODEL_ID),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", False),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": (
            {
                "input_tokens": tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": tokens + 5,
            }
            if status == "completed"
            else None
        ),
        "metadata": {},
    }


def sse(body: dict[str, Any]) -> bytes:
    items = output_items(body)
    final = response(body, items, "completed")
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
    ]
    for i, item in enumerate(items):
        if item["type"] == "function_call":
            events += [
                {
                    "type": "response.output_item.added",
                    "output_index": i,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                },
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item["id"],
                    "output_index": i,
                    "delta": item["arguments"],
                },
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item["id"],
                    "output_index": i,
                    "name": item["name"],
                    "arguments": item["arguments"],
                },
            ]
        else:
            part = item["content"][0]
            ref = {"item_id": item["id"], "output_index": i, "content_index": 0}
            events += [
                {
                    "type": "response.output_item.added",
                    "output_index": i,
                    "item": {**item, "content": [], "status": "in_progress"},
                },
                {"type": "response.content_part.added", **ref, "part": {**part, "text": ""}},
                {
                    "type": "response.output_text.delta",
                    **ref,
                    "delta": part["text"],
                    "logprobs": [],
                },
                {
                    "type": "response.output_text.done",
                    **ref,
                    "text": part["text"],
                    "logprobs": [],
                },
                {"type": "response.content_part.done", **ref, "part": part},
            ]
        events.append({"type": "response.output_item.done", "output_index": i, "item": item})
    events.append({"type": "response.completed", "response": final})
    return "".join(
        f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n"
        for n, e in enumerate(events)
    ).encode()


def compacted(body: dict[str, Any]) -> dict[str, Any]:
    users = [i for i in _items(body) if i.get("role") == "user"]
    return {
        "output": [
            *users,
            {"type": "compaction", "encrypted_content": "rec-compaction-" + uuid.uuid4().hex[:8]},
        ]
    }


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
                self.send_header("x-request-id", "req_rec" + uuid.uuid4().hex[:12])
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _json(self, payload: Any) -> None:
                self._send(200, json.dumps(payload).encode(), "application/json")

            def do_HEAD(self) -> None:
                self._record()
                self._send(200, b"", "text/plain")

            def do_GET(self) -> None:
                self._record()
                path = self.path.split("?", 1)[0]
                if path == "/v1/models":
                    model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "rec"}
                    self._json({"object": "list", "data": [model]})
                elif path == "/":
                    self._send(200, b"", "text/plain")
                else:
                    self._not_found()

            def do_POST(self) -> None:
                body = self._record()
                path = self.path.split("?", 1)[0]
                if path == "/v1/responses" and isinstance(body, dict):
                    if body.get("stream"):
                        self._send(200, sse(body), "text/event-stream")
                    else:
                        self._json(response(body, output_items(body), "completed"))
                elif path == "/v1/responses/compact" and isinstance(body, dict):
                    self._json(compacted(body))
                else:
                    self._not_found()

            def _not_found(self) -> None:
                err = {
                    "error": {
                        "message": "not recorded",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "not_found",
                    }
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
