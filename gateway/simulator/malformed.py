"""Broken 200 answers for the ``malformed`` fault: what goes on the wire, not how it is sent.

Each mode is one way real hosts and the proxies in front of them have answered badly: JSON cut
in half, a CDN's HTML page, an SSE stream cut mid-event, an error object sent with status 200,
a stream that closes cleanly without ``[DONE]``. :func:`malformed_wire` describes the answer;
the server writes it with the rule's delays (``ttft_ms``, ``chunk_delay_ms``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.simulator.behaviour import DONE, StreamPlan

JSON = "application/json"
SSE = "text/event-stream"
HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>502 Bad Gateway</h1><p>The upstream server did not answer.</p></body></html>"
)
BROKEN_EVENT = b'data: {"id": "broken", "choices": [{"index": 0, "delta": {"content": "unfin'


@dataclass(frozen=True, slots=True)
class Wire:
    """An answer to send: status, content type, body parts, and how the connection ends."""

    status: int
    content_type: str
    parts: list[bytes]
    abort: bool = False
    """Drop the connection after the parts instead of ending the body cleanly."""
    length: int | None = None
    """A Content-Length to declare (more than the parts hold, for a truncated body)."""


def malformed_wire(
    kind: str,
    plan: StreamPlan | None,
    completion: bytes,
    error_body: Any,
    status: int | None,
    cut: int | None,
    broken: bytes = BROKEN_EVENT,
    last: bytes = DONE,
) -> Wire | None:
    """The broken answer ``kind`` makes of a request's answer; None: answer normally.

    ``plan`` is the stream's events (None for a non-streaming request), ``completion`` the
    non-streaming body, ``error_body`` the dialect's error object, ``cut`` the content chunks
    sent before the breakage (streams). ``broken`` is the half event ``bad_json`` sends and
    ``last`` the closing event ``no_done`` leaves out (chat: ``[DONE]``; Messages: the
    ``message_stop`` event).
    """
    if kind == "html":
        return Wire(status or 200, "text/html; charset=utf-8", [HTML_PAGE])
    if kind == "error_body":
        return Wire(status or 200, JSON, [orjson.dumps(error_body)])
    if plan is None:
        return _whole(kind, completion)
    return _stream(kind, plan, cut, broken, last)


def _whole(kind: str, completion: bytes) -> Wire | None:
    half = completion[: len(completion) // 2]
    if kind == "bad_json":
        return Wire(200, JSON, [half])
    if kind == "truncated_sse":
        return Wire(200, JSON, [half], abort=True, length=len(completion))
    return None  # no_done: a non-streaming answer has no [DONE] to leave out


def _stream(kind: str, plan: StreamPlan, cut: int | None, broken: bytes, last: bytes) -> Wire:
    n = max(cut or 0, 0)
    sent = plan.head + plan.body[:n]
    rest = plan.body[n:] + plan.tail
    if kind == "bad_json":
        return Wire(200, SSE, [*sent, broken + b"\n\n", *rest])
    if kind == "truncated_sse":
        nxt = rest[0] if rest else last
        return Wire(200, SSE, [*sent, nxt[: max(len(nxt) // 2, 1)]])
    # no_done
    if cut is None:
        return Wire(200, SSE, [*plan.head, *plan.body, *(e for e in plan.tail if e != last)])
    return Wire(200, SSE, sent)
