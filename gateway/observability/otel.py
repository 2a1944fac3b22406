"""Traces through the OpenTelemetry SDK, exported over OTLP/HTTP (protobuf) in batches.

The only module that imports the SDK, loaded only when :func:`gateway.observability.traces.
build_tracing` finds tracing switched on. The SDK reads its own variables: the exporter
``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, timeout, compression, certificates), the batch
processor ``OTEL_BSP_*`` (queue size, batch size, delay), the sampler ``OTEL_TRACES_SAMPLER``,
the resource ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (``service.name`` defaults to
``glm-gateway`` here).

A request is a SERVER span; each upstream attempt a CLIENT span below it, whose context goes
upstream as ``traceparent``. Spans carry the GenAI semantic conventions (``gen_ai.*``) and the
gateway's own ``glm.*`` attributes; never a key, a header or (unless
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` says so) prompt or completion text.
Attributes are set once per span, when the request ends, from what the router recorded, so the
request path takes the span lock once per span. Ended spans go to a bounded queue that a
background thread exports; a full queue drops spans, never waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.catalogue.needs import Needs
from gateway.catalogue.target import Target
from gateway.observability.genai import (
    answer_finish_reasons,
    input_messages,
    output_messages,
    usage_attributes,
)
from gateway.observability.records import AttemptRecord, RouteRecord
from gateway.observability.redact import Redactor
from gateway.observability.timing import StageTimes

log = logging.getLogger("glm_gateway.traces")
DEFAULT_SERVICE = "glm-gateway"
FLUSH_S = 3.0
"""At shutdown, spans still queued get this long to be exported; then they are dropped."""
LISTED = 8
"""Candidates named on a request span at most (the count is always there). Each attribute
costs ~2 µs to set and ~3 µs to encode for export: a list of 63 ids cost more than the rest."""
MODEL_CHARS = 80
_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
)


def _resource() -> Resource:
    """The SDK's resource from ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``, with this
    gateway's name where neither names the service."""
    res = Resource.create({SERVICE_VERSION: __version__})
    name = str(res.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        res = res.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE}))
    return res


def _endpoint() -> str:
    url = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if url:
        return url
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/") + "/v1/traces"


class OTelTracing:
    """A tracer provider with one batch processor and an OTLP/HTTP exporter."""

    def __init__(
        self, redactor: Redactor, *, capture: bool = False, exporter: SpanExporter | None = None
    ) -> None:
        # The SDK warns once per span it drops (a full queue while the collector is away):
        # under load that is a log line per request. Failed exports still log, as errors.
        logging.getLogger("opentelemetry").setLevel(logging.ERROR)
        self.exporter = exporter if exporter is not None else OTLPSpanExporter()
        self.provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        # Not the global provider: FastAPI's own telemetry would then trace every endpoint.
        self.tracer = self.provider.get_tracer("glm-gateway", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.redact = redactor
        self.capture = capture
        self._static: dict[str, dict[str, Any]] = {}
        if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") != "http/protobuf":
            log.warning("traces: OTEL_EXPORTER_OTLP_PROTOCOL ignored; exporting http/protobuf")
        log.info("traces: exported over OTLP/HTTP to %s", redactor(_endpoint()))

    def start(self, headers: Mapping[str, str]) -> _RequestSpan:
        parent = self.propagator.extract(headers) if "traceparent" in headers else None
        return _RequestSpan(self, self.tracer.start_span("chat", parent, SpanKind.SERVER))

    def attempt_attributes(self, target: Target) -> dict[str, Any]:
        """What an attempt span says of its deployment (built once per deployment)."""
        attrs = self._static.get(target.id)
        if attrs is None:
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": target.provider,
                "gen_ai.system": target.provider,  # the name before semconv 1.37, still read
                "gen_ai.request.model": target.model,
                "glm.variant": target.variant.id,
            }
            url = urlsplit(target.base_url or "")
            if url.hostname:
                attrs["server.address"] = url.hostname
                attrs["server.port"] = url.port or (443 if url.scheme == "https" else 80)
            self._static[target.id] = attrs
        return attrs

    async def aclose(self) -> None:
        done = threading.Event()

        def stop() -> None:
            try:
                self.provider.shutdown()
            finally:
                done.set()

        # A thread of its own (daemon): a collector that never answers cannot hold the exit.
        threading.Thread(target=stop, name="glm-traces-shutdown", daemon=True).start()
        if await asyncio.to_thread(done.wait, FLUSH_S):
            return
        self.exporter.shutdown()  # stops the exporter's retries: the worker ends
        if not await asyncio.to_thread(done.wait, 0.5):
            log.warning("traces: the collector took longer than %gs; queued spans dropped", FLUSH_S)


class _RequestSpan:
    """One request's SERVER span and the CLIENT spans of its upstream attempts."""

    __slots__ = ("attempts", "parent", "span", "t")

    def __init__(self, tracing: OTelTracing, span: Span) -> None:
        self.t = tracing
        self.span = span
        self.parent: Context | None = None
        self.attempts: list[Span] = []

    def attempt(self, target: Target) -> Mapping[str, str]:
        t = self.t
        if self.parent is None:
            self.parent = set_span_in_context(self.span)
        span = t.tracer.start_span(
            f"chat {target.model}", self.parent, SpanKind.CLIENT, t.attempt_attributes(target)
        )
        self.attempts.append(span)
        # What TraceContextTextMapPropagator.inject writes, without its context lookups.
        sc = span.get_span_context()
        sent = {"traceparent": f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"}
        if sc.trace_state:
            sent["tracestate"] = sc.trace_state.to_header()
        return sent

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
        end = time.time_ns()
        span = self.span
        self._end_attempts(rs, stream, end)
        if not span.is_recording():
            span.end(end)
            return
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.stream": stream,
            "http.response.status_code": status,
            "glm.api": api,
            "glm.request_id": request_id,
            "glm.key_id": key_id,
            "client.address": client,
        }
        model = _model(chat, self.t.redact)
        if model is not None:
            attrs["gen_ai.request.model"] = model
        if chat is not None:
            _request_params(chat, attrs)
        if needs is not None:
            _needs(needs, attrs)
        if rs is not None:
            _routing(rs, attrs)
        reasons = [finish_reason] if finish_reason else answer_finish_reasons(answer)
        if reasons:
            attrs["gen_ai.response.finish_reasons"] = reasons
        if times.ttft_s is not None:  # the time to first token, as the conventions name it
            attrs["gen_ai.response.time_to_first_chunk"] = times.ttft_s
        if self.t.capture:
            self._content(chat, answer, attrs)
        if error is not None:
            attrs["error.type"] = error
        span.set_attributes(attrs)
        span.update_name(f"chat {model}" if model else "chat")
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, error or str(status)))
        span.end(end)

    def _content(self, chat: Mapping[str, Any] | None, answer: Any, attrs: dict[str, Any]) -> None:
        """Prompt and (non-streamed) completion text, redacted: only when configured."""
        if chat is not None:
            attrs["gen_ai.input.messages"] = self.t.redact(input_messages(chat))
        text = output_messages(answer) if answer is not None else None
        if text:
            attrs["gen_ai.output.messages"] = self.t.redact(text)

    def _end_attempts(self, rs: RouteRecord | None, stream: bool, end: int) -> None:
        records: Sequence[AttemptRecord] = rs.attempts if rs is not None else ()
        committed = stream and rs is not None and rs.target is not None
        last = len(records) - 1
        for i, span in enumerate(self.attempts):
            if not span.is_recording():
                continue
            if i > last:  # sent, never answered: the request ended first (cancelled, deadline)
                span.set_status(Status(StatusCode.ERROR, "the request ended before an answer"))
                span.set_attribute("error.type", "cancelled")
                span.end(end)
                continue
            rec = records[i]
            attrs = _attempt(rec, followed=i < last)
            if i == last and rs is not None and rs.target is not None:
                attrs.update(usage_attributes(rs.usage))
            span.set_attributes(attrs)
            if rec.failure is not None:
                span.set_status(Status(StatusCode.ERROR, str(attrs.get("glm.failure", ""))))
            start = getattr(span, "start_time", None)
            took = int(rec.duration_s * 1e9)
            span.end(end if (committed and i == last) or start is None else start + took)


def _attempt(rec: AttemptRecord, *, followed: bool) -> dict[str, Any]:
    """An attempt's outcome as span attributes (``rec.describe()``: already redacted)."""
    d = rec.describe()
    attrs: dict[str, Any] = {}
    if d["status"]:
        attrs["http.response.status_code"] = d["status"]
    if rec.failure is None:
        return attrs
    code = f" code={d['code']}" if d["code"] else ""
    why = f"{d['class']} {d['status'] or 'no-answer'}{code}"
    attrs["error.type"] = d["class"]
    attrs["glm.failure"] = f"{why}: {d['message'][:200]}"
    if d["code"]:
        attrs["glm.failure.code"] = str(d["code"])
    if followed:
        attrs["glm.fallback_reason"] = why
    return attrs


def _model(chat: Mapping[str, Any] | None, redact: Redactor) -> str | None:
    """The ``model`` the client asked for: whatever it sent (an unknown one is a 404), so cut
    short and redacted like any text from outside."""
    model = chat.get("model") if chat is not None else None
    return redact(model[:MODEL_CHARS]) if isinstance(model, str) and model else None


def _request_params(chat: Mapping[str, Any], attrs: dict[str, Any]) -> None:
    for field, name in _PARAMS:
        value = chat.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[name] = value


def _needs(needs: Needs, attrs: dict[str, Any]) -> None:
    if needs.capabilities or needs.builtin_tools:
        attrs["glm.needs"] = sorted({*needs.capabilities, *needs.builtin_tools})
    attrs["glm.needs.context"] = needs.context_need()
    attrs["glm.prefer"] = needs.policy
    attrs["glm.fallback"] = needs.fallback
    if needs.providers:
        attrs["glm.needs.providers"] = list(needs.providers)


def _routing(rs: RouteRecord, attrs: dict[str, Any]) -> None:
    targets = rs.plan.targets
    attrs["glm.candidates.count"] = len(targets)
    # One string, not a list: an attribute per list item to check and to encode.
    attrs["glm.candidates"] = ",".join(t.id for t in targets[:LISTED])
    attrs["glm.attempts"] = len(rs.attempts)
    target = rs.target or (rs.attempts[-1].target if rs.attempts else None)
    if target is not None:  # who answered, or who was tried last
        attrs["gen_ai.provider.name"] = target.provider
        attrs["glm.variant"] = target.variant.id
    if rs.target is not None:
        attrs["gen_ai.response.model"] = rs.target.variant.id
    reason = rs.fallback_reason
    if reason:
        attrs["glm.fallback_reason"] = reason
    attrs.update(usage_attributes(rs.usage))
