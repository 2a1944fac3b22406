"""A real OTLP/HTTP trace receiver on loopback for tests and the bench.

It accepts ``POST /v1/traces`` with a protobuf body, decodes it with the official definitions
(``opentelemetry-proto``: ``ExportTraceServiceRequest``), keeps the raw bodies (to search them
for secrets) and answers as a collector does (an empty ``ExportTraceServiceResponse``).
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.support.procs import free_port


def value(v: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


@dataclass
class ReceivedSpan:
    """One decoded span, its ids as hex."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attrs: dict[str, Any]
    resource: dict[str, Any]
    events: list[str] = field(default_factory=list)


@dataclass
class OTLPReceiver:
    """Collects every span exported to it; ``status`` makes it answer an error instead."""

    bodies: list[bytes] = field(default_factory=list)
    spans: list[ReceivedSpan] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    status: int = 200
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.paths.append(request.path)
        self.bodies.append(body)
        if self.status != 200:
            return web.Response(status=self.status)
        self._decode(body)
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    def _decode(self, body: bytes) -> None:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            status_code=s.status.code,
                            status_message=s.status.message,
                            attrs=attributes(s.attributes),
                            resource=resource,
                            events=[e.name for e in s.events],
                        )
                    )

    async def wait_for(
        self, pick: Callable[[ReceivedSpan], bool], count: int = 1, within_s: float = 20.0
    ) -> list[ReceivedSpan]:
        """The spans ``pick`` accepts, once there are ``count`` of them."""
        end = time.monotonic() + within_s
        while True:
            found = [s for s in self.spans if pick(s)]
            if len(found) >= count:
                return found
            if time.monotonic() > end:
                raise AssertionError(f"{len(found)} of {count} spans arrived in {within_s}s")
            await asyncio.sleep(0.05)
