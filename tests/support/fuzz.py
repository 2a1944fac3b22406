"""Shared by the fuzz suites (tests/chaos/test_fuzz_*.py): a gateway of their own, its log, the
one verdict every answer must pass, and Hypothesis settings that make CI reproducible.

The verdict: never a 500 (nor any 5xx but 502/503/504, which are upstream-side outcomes), every
error in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, and no traceback
in the gateway's log.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from tests.support.e2e import MASTER_KEY, assert_error_shape, module_gateway

__all__ = ["MASTER_KEY"]  # re-exported for the fuzz modules
from tests.support.procs import OUT, Proc

set_hypothesis_home_dir(OUT / "hypothesis")  # its caches go with the suite's output, not ./
UPSTREAM_STATUSES = frozenset({502, 503, 504})
"""The only 5xx a client may see, and only with an OpenAI error body."""
VALID_MODELS = ("auto", "glm-4", "cheap", "vision", "glm-4.7", "glm-4.6v", "glm-4-9b", "glm-4v-9b")
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "Exception in ASGI application")


def fuzz_settings(max_examples: int) -> settings:
    """Bounded, derandomized (the same cases every run), no example database written."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


@contextmanager
def fuzz_gateway(sim: Proc, tmp: Path) -> Iterator[Proc]:
    """A gateway of the fuzz suite's own (its log holds only fuzz traffic): the shipped config,
    every provider on the simulator, auth on with :data:`MASTER_KEY`."""
    with module_gateway(sim, tmp) as proc:
        yield proc


class LogWatch:
    """What the gateway logged since :meth:`mark`."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.offset = 0
        self.mark()

    def mark(self) -> None:
        self.offset = self.proc.log_path.stat().st_size

    def since(self) -> str:
        with self.proc.log_path.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def assert_no_traceback(self, where: str = "") -> None:
        text = self.since()
        self.mark()  # each traceback is reported once
        for marker in TRACEBACK_MARKERS:
            at = text.find(marker)
            assert at < 0, (
                f"traceback in the gateway log{where}:\n{text[max(0, at - 600) :][:4000]}"
            )


def verdict(
    status: int, headers: Mapping[str, Any], body: bytes, where: str, *, gateway: bool = True
) -> dict[str, Any] | None:
    """Assert one answer is acceptable; return its error object when it is an error.

    ``gateway=False`` for answers the HTTP server itself gives to input that is not HTTP (it
    has no OpenAI body); they still may not be 5xx.
    """
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    ctype = ctype[0] if isinstance(ctype, list) else ctype  # Schemathesis: name -> [values]
    detail = f"{where}\n-> {status} {ctype}: {body[:600]!r}"
    upstream = status in UPSTREAM_STATUSES or (status == 529 and "/v1/messages" in where)
    assert status < 500 or upstream, "server error " + detail
    if status < 400 or not gateway:
        return None
    assert ctype.startswith("application/json"), "error not JSON " + detail
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AssertionError("error body is not JSON " + detail) from None
    if "/v1/messages" in where:  # Anthropic's API: Anthropic's error shape, checked by its spec
        from tests.support.messages_wire import check_error

        try:
            return check_error(parsed).error.model_dump()
        except Exception as exc:
            raise AssertionError(f"error not in Anthropic's shape ({exc}) {detail}") from None
    try:
        return assert_error_shape(parsed)
    except AssertionError as exc:
        raise AssertionError(f"error not in OpenAI's shape ({exc}) {detail}") from None


PROTOCOL_REJECT = b"Invalid HTTP request received."
"""uvicorn's plain-text 400 for bytes that are not HTTP (never reaches the gateway)."""


class RawAnswer:
    """One HTTP/1.1 answer read off a socket (``Connection: close``; chunked bodies joined)."""

    def __init__(self, raw: bytes) -> None:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ")[1]) if lines and lines[0] else 0
        self.headers = {
            k.strip().lower().decode("latin-1"): v.strip().decode("latin-1")
            for k, _, v in (line.partition(b":") for line in lines[1:])
        }
        self.body = (
            _dechunk(rest) if "chunked" in self.headers.get("transfer-encoding", "") else rest
        )

    @property
    def from_http_server(self) -> bool:
        """uvicorn's own reject of malformed HTTP (no request id: the gateway never saw it)."""
        return "x-request-id" not in self.headers and self.body.startswith(PROTOCOL_REJECT)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def raw_request(
    url: str,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    content_length: bool = True,
    timeout: float = 60,
) -> RawAnswer:
    """Send exactly these bytes (headers in order, duplicates and all) and read the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head = [f"{method} {path} HTTP/1.1".encode(), f"Host: {host}:{port}".encode()]
    head += [k + b": " + v for k, v in headers]
    if content_length:
        head.append(b"Content-Length: " + str(len(body)).encode())
    head.append(b"Connection: close")
    payload = b"\r\n".join(head) + b"\r\n\r\n" + body
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        # Answered (413/400) and closed before reading it all: read the answer all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        chunks = []
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            chunks.append(part)
    return RawAnswer(b"".join(chunks))


def raw_verdict(answer: RawAnswer, where: str) -> dict[str, Any] | None:
    """:func:`verdict` for a raw answer; uvicorn's own 400 for non-HTTP bytes is allowed."""
    assert answer.status, f"no answer at all {where}"
    return verdict(
        answer.status, answer.headers, answer.body, where, gateway=not answer.from_http_server
    )
