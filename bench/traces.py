"""What OpenTelemetry traces cost: gateway CPU µs per request with tracing off and on.

Two apps from the same tree, both :mod:`inproc`'s (shipped config, auth on, capability routing,
metrics, in-memory state, access log to /dev/null, a canned upstream answering at once, uvloop):
one built without ``OTEL_*`` (tracing off: the SDK is not even imported), one with
``OTEL_EXPORTER_OTLP_ENDPOINT`` naming a sink on loopback (:mod:`otlp_sink`, its own process,
so decoding there is not counted). The SDK's batch settings are its defaults unless ``OTEL_BSP_*``
is set. The CPU time is the process's, so it includes the SDK's export thread (protobuf
encoding, the HTTP posts). Rounds alternate off and on; the added µs and the ratio are the
medians of per-round pairs. At the end the queue is flushed and the sink says how many spans
arrived (two per request: the request and its one upstream attempt; fewer means the bounded
queue dropped some, or a sampler set by ``OTEL_TRACES_SAMPLER`` left them out).

    .venv/bin/python bench/traces.py                       # json and sse, 7 rounds
    .venv/bin/python bench/traces.py --shapes json --rounds 9 --n 3000
    OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 .venv/bin/python bench/traces.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from inproc import BODY_JSON, build, run

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sink_counts(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        counts: dict[str, int] = json.loads(r.read())
    return counts


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "otlp_sink.py"), str(port)])
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            sink_counts(port)
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the OTLP sink did not start")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", default=str(HERE.parent))
    p.add_argument("--n", type=int, default=3000, help="requests per measurement")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--model", default="auto")
    p.add_argument("--shapes", type=lambda s: s.split(","), default=["json", "sse"])
    args = p.parse_args()
    sink, port = start_sink()
    try:
        for name in [k for k in os.environ if k.startswith("OTEL_EXPORTER_OTLP_")]:
            del os.environ[name]
        off = build(Path(args.src).resolve())
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
        on = build(Path(args.src).resolve())
        assert off.services.tracing is None and on.services.tracing is not None
        traced = measure(off, on, args)
        on.services.tracing.provider.force_flush()
        got = sink_counts(port)
        print(
            f"sink: {got['spans']} spans for {traced} traced requests ({got['requests']} exports, "
            f"{got['bytes'] / max(1, got['spans']):.0f} bytes per span)"
        )
    finally:
        sink.terminate()
        sink.wait(10)
    return 0


def measure(off: Any, on: Any, args: argparse.Namespace) -> int:
    """Alternated rounds per shape, printed; the number of requests the traced app served."""
    import uvloop

    loop = uvloop.new_event_loop()  # what `glm-gateway serve` runs on
    bodies = {
        "json": BODY_JSON % (args.model.encode(), b""),
        "sse": BODY_JSON % (args.model.encode(), b',"stream":true'),
    }
    for shape in args.shapes:
        body = bodies[shape]
        offs, ons = [], []
        for _ in range(args.rounds):
            offs.append(loop.run_until_complete(run(off, body, args.n)))
            ons.append(loop.run_until_complete(run(on, body, args.n)))
        added = statistics.median(b - a for a, b in zip(offs, ons, strict=True))
        ratio = statistics.median(b / a for a, b in zip(offs, ons, strict=True))
        print(
            f"{shape}: off {statistics.median(offs):.1f} µs/request, on "
            f"{statistics.median(ons):.1f} µs/request, added {added:.1f} µs, ratio {ratio:.2f} "
            f"(per-round added: {', '.join(f'{b - a:.0f}' for a, b in zip(offs, ons, strict=True))})"  # noqa: E501
        )
    loop.run_until_complete(asyncio.sleep(0))
    return len(args.shapes) * args.rounds * (args.n + 200)  # run() warms up with 200


if __name__ == "__main__":
    sys.exit(main())
