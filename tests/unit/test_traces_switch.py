"""Which ``OTEL_*`` variables switch traces on, and that off means the SDK is never loaded.

The import check runs in a fresh interpreter (this one may have loaded the SDK for other
tests): the app is built and answers a chat request through its ASGI interface (every upstream
refuses the connection, so the router's attempts run too), then ``sys.modules`` is read.
FastAPI imports the OpenTelemetry *API* by itself; what tracing would add is the SDK, the
exporter and protobuf.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gateway.observability.traces import capture_content, tracing_enabled
from tests.support.procs import ROOT

ENDPOINT = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "gw", "OTEL_BSP_SCHEDULE_DELAY": "100"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_an_endpoint_switches_traces_on(env: dict[str, str], on: bool) -> None:
    assert tracing_enabled(env) is on


@pytest.mark.parametrize(
    ("value", "on"),
    [("", False), ("false", False), ("NO_CONTENT", False), ("true", True), ("span_only", True)],
)
def test_content_is_captured_only_when_configured(value: str, on: bool) -> None:
    assert capture_content({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value}) is on


PROBE = """
import asyncio, json, sys
import httpx
from gateway.app import create_app
from gateway.catalogue.loader import default_config_dir, load_config

app = create_app(load_config(default_config_dir(), demo_simulator_url="http://127.0.0.1:9"))

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer sk-probe-master"},
        )
    return r.status_code

status = asyncio.run(main())
heavy = ("opentelemetry.sdk", "opentelemetry.exporter", "google.protobuf")
print(json.dumps({
    "status": status,
    "tracing": app.services.tracing is not None,
    "loaded": sorted(m for m in sys.modules if m.startswith(heavy)),
}))
"""


def probe(env: dict[str, str]) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, **env, "GLM_GATEWAY_MASTER_KEY": "sk-probe-master"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_off_loads_no_sdk_and_on_does() -> None:
    off = probe({})
    # Every upstream refused the connection: the whole request path ran, attempts included.
    assert off == {"status": 502, "tracing": False, "loaded": []}
    on = probe(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    )
    assert on["tracing"] is True and on["status"] == 502
    assert "opentelemetry.sdk.trace" in on["loaded"]  # type: ignore[operator]
