"""Build and run the ASGI server: the only module that imports uvicorn.

uvicorn's own signal handling stops accepting at once, waits for in-flight requests, then
re-raises the signal (the process exits 143 on SIGTERM). This server instead follows the
:class:`~gateway.edge.lifecycle.Lifecycle`: on SIGTERM or SIGINT readiness says 503 while the
gateway keeps serving for the grace, then it stops accepting and drains, cuts what is left with
the shutdown error, runs the app's shutdown and returns (exit 0). A second signal ends the grace
and the drain at once.

SIGHUP reloads the config (:mod:`gateway.edge.reload`): the handler is installed on the running
loop once the server has started; before that, a SIGHUP is ignored rather than fatal.

uvicorn writes an answer's head in a socket write of its own, then each body part in another:
a non-streamed answer cost two ``send`` syscalls. :class:`_Protocol` gives uvicorn's protocol a
transport (:class:`_HeadWithBody`) that holds the head until the next write of the same loop
step (the body, in the same step when the app sends it at once) or the end of that step.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.edge.asgi import Receive, Scope, Send
from gateway.edge.lifecycle import CUT_WAIT_S, Lifecycle
from gateway.edge.listener import refuse_new_connections

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CLOSE = (b"connection", b"close")
ACCEPT_QUEUED_S = 0.05
"""After new connection attempts are dropped: time for the loop to accept those already queued
and for handshakes under way to end (a round trip) before the listening socket closes."""


_HEAD = b"HTTP/1.1 "
"""uvicorn's status lines start so (``STATUS_LINE``); a write that starts so is a head."""


class _HeadWithBody:
    """A transport whose head writes wait for the next write (sent together, one syscall) or
    the end of the loop step (:meth:`_flush`); everything else is the real transport's."""

    __slots__ = ("_held", "_loop", "_t")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._t = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._t.writelines((held, data))
        elif data[:9] == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._t.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._t.is_closing():
            self._t.write(held)

    def writelines(self, parts: object) -> None:
        self._flush()
        self._t.writelines(parts)  # type: ignore[arg-type]

    def close(self) -> None:
        self._flush()
        self._t.close()

    def write_eof(self) -> None:
        self._flush()
        self._t.write_eof()

    def abort(self) -> None:
        self._held = None
        self._t.abort()

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`_HeadWithBody` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, _HeadWithBody(transport, self.loop))


class _Server(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        on_hangup: Callable[[], None] | None,
        on_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        self._life = lifecycle
        self._on_hangup = on_hangup
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._on_hangup is not None and not self.should_exit:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_hangup)
        if self._on_started is not None and not self.should_exit:
            await self._on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded for re-raising after serve(): a drained shutdown is a clean exit.
        self._life.signal(signal.Signals(sig).name)
        self._close_after_each_answer()

    def _close_after_each_answer(self) -> None:
        """From the first stop signal on, every answer carries ``Connection: close`` and its
        connection closes after it. A proxy that keeps connections to this replica alive
        (nginx ``keepalive``) then stops reusing them one answer at a time, knowing it, rather
        than sending a request on a connection the drain is closing: that request (a POST) it
        would answer with a 502 instead of trying another replica."""
        if CLOSE not in self.config.encoded_headers:  # uvicorn adds these to every response
            self.config.encoded_headers = [*self.config.encoded_headers, CLOSE]
            self.server_state.default_headers = [*self.server_state.default_headers, CLOSE]

    async def on_tick(self, counter: int) -> bool:
        return await super().on_tick(counter) or self._life.grace_over()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # No new connections (a proxy in front tries another replica), without resetting the
        # ones already queued: they are accepted and served first (gateway/edge/listener.py).
        refused = [refuse_new_connections(s) for server in self.servers for s in server.sockets]
        if any(refused):
            await asyncio.sleep(ACCEPT_QUEUED_S)
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_started:
                connection.shutdown()  # its answer will say Connection: close
        # Idle keep-alive connections, and those of answers under way, stay open through the
        # drain: closing one races a proxy that may be sending a request on it at that moment
        # (a POST it would then answer with a 502). A request it sends on one is served and
        # answered with Connection: close; what is still idle after the drain closes below.
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
    *,
    sock: socket.socket | None = None,
    on_started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve ``app`` until a stop signal has been handled as described above; ``on_hangup``
    is called on the event loop for each SIGHUP. ``sock``: an already listening socket to
    accept from instead of binding ``host:port`` (``serve --workers N``, see
    :mod:`gateway.edge.workers`); ``on_started`` runs on the loop once it listens."""
    if on_hangup is not None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop's handler is installed
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=_Protocol,
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # the gateway never reads the client address: skip that middleware
        server_header=False,
        log_level="warning",
        log_config=None,  # keep configure_logging's handlers (uvicorn's errors as JSON too)
        timeout_graceful_shutdown=int(CUT_WAIT_S) + 1,
    )
    _Server(config, lifecycle, on_hangup, on_started).run(sockets=None if sock is None else [sock])
