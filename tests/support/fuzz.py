"""Shared by the fuzz suites (tests/chaos/test_fuzz_*.py): a gateway of their own, its log, the
one verdict every answer must pass, and Hypothesis settings that make CI reproducible.

The verdict: never a 500 (nor any 5xx but 502/503/504, which are upstream-side outcomes), every
error in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, and no traceback
in the gateway's log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, settings

from tests.support.e2e import AUTH, MASTER_KEY, assert_error_shape, module_gateway
from tests.support.procs import Proc

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
    assert status < 500 or status in UPSTREAM_STATUSES, "server error " + detail
    if status < 400 or not gateway:
        return None
    assert ctype.startswith("application/json"), "error not JSON " + detail
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AssertionError("error body is not JSON " + detail) from None
    try:
        return assert_error_shape(parsed)
    except AssertionError as exc:
        raise AssertionError(f"error not in OpenAI's shape ({exc}) {detail}") from None


__all__ = ["AUTH", "MASTER_KEY", "LogWatch", "fuzz_gateway", "fuzz_settings", "verdict"]
