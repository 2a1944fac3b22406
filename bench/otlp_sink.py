"""An OTLP/HTTP trace sink for the bench: accepts ``POST /v1/traces``, counts the spans it
decodes (official protobuf definitions) and answers as a collector does; ``GET /`` returns the
counts as JSON. Run as its own process so that what it spends is not the gateway's CPU.

    .venv/bin/python bench/otlp_sink.py PORT
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

COUNTS = {"requests": 0, "spans": 0, "bytes": 0}
LOCK = threading.Lock()
ANSWER = ExportTraceServiceResponse().SerializeToString()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        spans = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with LOCK:
            COUNTS["requests"] += 1
            COUNTS["spans"] += spans
            COUNTS["bytes"] += len(body)
        self._answer(ANSWER, "application/x-protobuf")

    def do_GET(self) -> None:
        with LOCK:
            data = json.dumps(COUNTS).encode()
        self._answer(data, "application/json")

    def _answer(self, data: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return None


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
