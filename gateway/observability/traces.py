"""OpenTelemetry traces: whether they are on, and the shapes the request path calls.

Tracing is off unless the standard variables name an OTLP endpoint
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``), and off again with
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. When it is off nothing of the
OpenTelemetry SDK is imported and the request path pays one ``is not None`` test per request
(the edge) and per upstream attempt (the router). When it is on,
:mod:`gateway.observability.otel` (the only module that imports the SDK) is loaded and
:func:`build_tracing` returns its :class:`Tracing`.

The router sees only :class:`AttemptTracer` (one span per upstream attempt, and the
``traceparent`` header to send with it); the edge sees :class:`Tracing` and
:class:`RequestTrace`. Neither imports anything of OpenTelemetry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from gateway.catalogue.needs import Needs
from gateway.catalogue.target import Target
from gateway.observability.records import RouteRecord
from gateway.observability.redact import Redactor
from gateway.observability.timing import StageTimes

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
CAPTURE_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI instrumentations' switch for prompt and completion text (off by default)."""
_CAPTURE_ON = frozenset({"true", "1", "span_only", "span_and_event"})


class AttemptTracer(Protocol):
    """What the router calls once per upstream attempt, before it is sent."""

    def attempt(self, target: Target) -> Mapping[str, str]:
        """Open this attempt's span; the headers to send upstream with it (``traceparent``,
        ``tracestate``). The span is ended when the request is (:meth:`RequestTrace.finish`),
        from the router's record of the attempt."""
        ...


class RequestTrace(AttemptTracer, Protocol):
    """One request's span and its attempts' spans."""

    def finish(
        self,
        *,
        request_id: str,
        api: str,
        status: int,
        error: str | None,
        stream: bool,
        key_id: str,
        client: str,
        chat: Mapping[str, Any] | None,
        needs: Needs | None,
        rs: RouteRecord | None,
        times: StageTimes,
        answer: Any = None,
        finish_reason: str | None = None,
    ) -> None:
        """End every span of the request, with what it came to. ``answer``: the non-streamed
        answer (bytes or object) when the front-end holds one; ``finish_reason``: a stream's."""
        ...


class Tracing(Protocol):
    """The process's tracer: a span per request, exported in the background."""

    def start(self, headers: Mapping[str, str]) -> RequestTrace:
        """The request's span, continuing the client's W3C ``traceparent`` when it sent a valid
        one (a malformed one is ignored: a new trace starts)."""
        ...

    async def aclose(self) -> None:
        """Export what is queued, for a bounded time, and stop the exporter."""
        ...


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    """Do the ``OTEL_*`` variables switch traces on?"""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARS)


def capture_content(environ: Mapping[str, str]) -> bool:
    """Should spans carry prompt and completion text? Only when configured."""
    return environ.get(CAPTURE_VAR, "").strip().lower() in _CAPTURE_ON


def build_tracing(redactor: Redactor, environ: Mapping[str, str] | None = None) -> Tracing | None:
    """The process's :class:`Tracing` when the environment switches traces on, else None
    (and the SDK is never imported)."""
    env = os.environ if environ is None else environ
    if not tracing_enabled(env):
        return None
    from gateway.observability.otel import OTelTracing

    return OTelTracing(redactor, capture=capture_content(env))
