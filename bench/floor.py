"""The floor reference: raw ASGI on uvicorn + one aiohttp session, a pure pass-through.

No auth, no routing, no metrics, no parsing: read the body, POST it to ``FLOOR_UPSTREAM``
(``http://host:port/path``; the client's path is appended when it ends with ``/``), relay the
answer (streams chunk by chunk as they arrive). This is the cheapest a Python proxy on this
stack can be; the gateway's figures are quoted against it.

Run: ``FLOOR_UPSTREAM=http://127.0.0.1:9000/v1/chat/completions python bench/floor.py PORT``
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


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
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
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


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8090
    app = Floor(os.environ["FLOOR_UPSTREAM"])
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
