"""The floor reference: raw ASGI on uvicorn + one aiohttp session, a pure pass-through.

No auth, no routing, no metrics, no parsing: read the body, POST it to ``FLOOR_UPSTREAM``
(``http://host:port/path``; the client's path is appended when it ends with ``/``), relay the
answer (streams chunk by chunk as they arrive). This is the cheapest a Python proxy on this
stack can be; the gateway's figures are quoted against it.

Run: ``FLOOR_UPSTREAM=http://127.0.0.1:9000/v1/chat/completions python bench/floor.py PORT``

``bench/servers.py`` serves the same two apps on granian too (``floor_app``, ``minimal_app``).

``--minimal`` (after PORT) serves :class:`Minimal` instead: the floor plus the least per-request
work any gateway with issue 6's feature set must do. ``bench/run.py --full`` runs it beside the
floor (non-streaming only) as ``minimal``: it shows how much of the floor's throughput is left
once that irreducible work is paid, before any planner, breaker, limit or stage timing.
"""

from __future__ import annotations

import os
import sys
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def read_all(receive: Receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        part: bytes = msg.get("body", b"")
        body += part
        if not msg.get("more_body"):
            return body


class Floor:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None
        self.headers = {"Content-Type": "application/json", "Authorization": "Bearer floor"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["method"] == "GET":  # health
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = await read_all(receive)
        url = self.upstream + scope["path"] if self.upstream.endswith("/") else self.upstream
        assert self.session is not None
        async with self.session.post(url, data=body, headers=self.headers) as resp:
            ctype = resp.headers.get("Content-Type", "application/json")
            if ctype.startswith("text/event-stream"):
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": [(b"content-type", ctype.encode())],
                    }
                )
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await resp.read()
            await send(
                {
                    "type": "http.response.start",
                    "status": resp.status,
                    "headers": [
                        (b"content-type", ctype.encode()),
                        (b"content-length", str(len(data)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=512), skip_auto_headers=("User-Agent",)
                )
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, float("inf"))  # fmt: skip


class Minimal(Floor):
    """The floor plus only what no gateway with issue 6's features can skip, done the cheapest
    way: map the headers and look the bearer key up; parse the body and check ``model`` and each
    message's ``role``; map the model to a deployment (one dict lookup: no planner); count the
    key's requests; send the body re-serialised with the upstream model; parse the answer, check
    ``choices``, put the client's model back and serialise it; count the request by (model,
    provider, status); two histogram observations (duration, overhead); one JSON access-log
    line, written 64 at a time. No breakers, no limits or budgets, no stage marks, no fallback,
    no request adaptation: every real gateway does more than this.

    Non-streaming only (a stream is relayed as the floor relays it).
    """

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.keys = {"Bearer sk-bench": "bench"}
        self.routes = {"glm-4.7-flash": ("zai", "glm-4.7-flash")}
        self.window: dict[str, int] = {}
        self.counts: dict[tuple[str, str, int], int] = {}
        self.duration = [0] * len(_BOUNDS)
        self.overhead = [0] * len(_BOUNDS)
        self.lines: list[bytes] = []
        self.log = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the process

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.keys.get(headers.get("authorization", ""))
        raw = await read_all(receive)
        body = orjson.loads(raw)
        model, messages = body.get("model"), body.get("messages")
        ok = isinstance(model, str) and isinstance(messages, list)
        ok = ok and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        if key is None or not ok or body.get("stream") or model not in self.routes:
            await super().__call__(scope, _replay(raw), send)
            return
        provider, upstream_model = self.routes[model]
        self.window[key] = self.window.get(key, 0) + 1
        body["model"] = upstream_model
        assert self.session is not None
        sent = time.perf_counter()
        async with self.session.post(
            self.upstream, data=orjson.dumps(body), headers=self.headers
        ) as resp:
            data = await resp.read()
            status = resp.status
        upstream_s = time.perf_counter() - sent
        answer = orjson.loads(data)
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise RuntimeError("upstream answer without choices")
        answer["model"] = model
        out = orjson.dumps(answer)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(out)).encode()),
                    (b"x-glm-provider", provider.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": out})
        total = time.perf_counter() - started
        series = (model, provider, status)
        self.counts[series] = self.counts.get(series, 0) + 1
        self.duration[bisect_left(_BOUNDS, total)] += 1
        self.overhead[bisect_left(_BOUNDS, total - upstream_s)] += 1
        usage = answer.get("usage") or {}
        line = {
            "event": "request", "time": time.time(), "key_id": key, "status": status,
            "variant": model, "provider": provider, "tokens_in": usage.get("prompt_tokens"),
            "tokens_out": usage.get("completion_tokens"), "duration_ms": round(total * 1000, 3),
            "upstream_ms": round(upstream_s * 1000, 3), "error": None,
        }  # fmt: skip
        self.lines.append(orjson.dumps(line))
        if len(self.lines) >= 64:
            self.log.write(b"\n".join(self.lines) + b"\n")
            self.lines.clear()


def _replay(raw: bytes) -> Receive:
    """A receive() that hands the already-read body to the floor's path once more."""

    async def receive() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    return receive


def floor_app() -> Floor:
    """For granian's ``--factory`` (``bench/servers.py``): the floor on ``FLOOR_UPSTREAM``."""
    return Floor(os.environ["FLOOR_UPSTREAM"])


def minimal_app() -> Floor:
    """For granian's ``--factory``: :class:`Minimal` on ``FLOOR_UPSTREAM``."""
    return Minimal(os.environ["FLOOR_UPSTREAM"])


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8090
    upstream = os.environ["FLOOR_UPSTREAM"]
    app = Minimal(upstream) if sys.argv[2:3] == ["--minimal"] else Floor(upstream)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
