"""Build and run the ASGI server: the only module that imports uvicorn.

uvicorn's own signal handling stops accepting at once, waits for in-flight requests, then
re-raises the signal (the process exits 143 on SIGTERM). This server instead follows the
:class:`~gateway.edge.lifecycle.Lifecycle`: on SIGTERM or SIGINT readiness says 503 while the
gateway keeps serving for the grace, then it stops accepting and drains, cuts what is left with
the shutdown error, runs the app's shutdown and returns (exit 0). A second signal ends the grace
and the drain at once.

SIGHUP reloads the config (:mod:`gateway.edge.reload`): the handler is installed on the running
loop once the server has started; before that, a SIGHUP is ignored rather than fatal.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

from gateway.edge.asgi import Receive, Scope, Send
from gateway.edge.lifecycle import CUT_WAIT_S, Lifecycle

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, lifecycle: Lifecycle, on_hangup: Callable[[], None] | None
    ) -> None:
        super().__init__(config)
        self._life = lifecycle
        self._on_hangup = on_hangup

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._on_hangup is not None and not self.should_exit:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_hangup)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded for re-raising after serve(): a drained shutdown is a clean exit.
        self._life.signal(signal.Signals(sig).name)

    async def on_tick(self, counter: int) -> bool:
        return await super().on_tick(counter) or self._life.grace_over()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections: a proxy in front tries another replica
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle keep-alive connections close; busy ones after the answer
        await self._life.drain()
        # What is left (connections closing, requests outside the dispatcher) gets uvicorn's
        # own graceful wait, bounded by timeout_graceful_shutdown; then the app's shutdown.
        await super().shutdown(sockets)


def serve(
    app: ASGIApp,
    lifecycle: Lifecycle,
    host: str,
    port: int,
    on_hangup: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` until a stop signal has been handled as described above; ``on_hangup``
    is called on the event loop for each SIGHUP."""
    if on_hangup is not None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop's handler is installed
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # the gateway never reads the client address: skip that middleware
        server_header=False,
        log_level="warning",
        log_config=None,  # keep configure_logging's handlers (uvicorn's errors as JSON too)
        timeout_graceful_shutdown=int(CUT_WAIT_S) + 1,
    )
    _Server(config, lifecycle, on_hangup).run()
