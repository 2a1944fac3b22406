"""A small HTTP/1.1 client for the request path: one POST on a pooled keep-alive connection.

aiohttp's client spent ~70 µs of CPU per upstream request on the bench's loopback upstream
(headers merged and checked per request, cookie jar, tracing hooks, a timer context, a
payload writer, the stream reader); this client writes one prebuilt head plus the body in one
``write`` and feeds the answer to httptools (uvicorn's parser, a pinned dependency): ~15 µs.
It does what the gateway's upstream calls need and nothing more:

- ``http`` and ``https`` (the system's default TLS context, the host name verified); host
  names resolved once per :data:`DNS_TTL_S`, each address tried in turn;
- a pool of keep-alive connections per (scheme, host, port), with a total and a per-host limit
  (waiters queue for a released connection); idle connections older than
  :data:`KEEPALIVE_S` are closed rather than reused (a host's own idle timeout would otherwise
  race the next request), and a connection the host closes while idle is dropped;
- answers with ``Content-Length``, ``Transfer-Encoding: chunked`` or read until close;
  ``gzip``/``deflate`` bodies are decompressed (``Accept-Encoding: gzip, deflate``, as aiohttp
  sent);
- timeouts as the provider asked for them: the wait for a connection (pool and connect), the
  wait for the answer's head, each wait for body bytes (streams), or one deadline for the whole
  answer (non-streams). :class:`TimeoutError` when one passes, :class:`ConnectionError` for a
  refused, reset or unparsable connection;
- a response closed before its end closes its connection (the upstream sees the request
  cancelled); one read to its end goes back to the pool at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import socket
import ssl
import time
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

KEEPALIVE_S = 15.0
"""An idle connection is reused for this long (aiohttp's default keep-alive timeout)."""
DNS_TTL_S = 300.0
"""How long a resolved host name is used before it is resolved again."""
_PAUSE_AT = 1 << 20
"""Unread body bytes at which the socket stops being read (flow control for slow consumers)."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Headers(Mapping[str, str]):
    """An answer's headers: case-insensitive lookup; repeated names joined with ``", "``."""

    __slots__ = ("_d",)

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        d: dict[str, str] = {}
        for k, v in pairs:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            d[name] = f"{d[name]}, {value}" if name in d else value
        self._d = d

    def __getitem__(self, key: str) -> str:
        return self._d[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"Headers({self._d!r})"


class Origin:
    """Where requests go: parsed once per URL, with the request line and ``Host`` prebuilt."""

    __slots__ = ("host", "key", "path", "port", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.key = (self.tls, self.host, self.port)

    def head(self, headers: Mapping[str, str]) -> bytes:
        """The request head without ``Content-Length`` and the blank line (:meth:`Pool.post`
        adds them): the request line, ``Host``, ``Accept-Encoding``, then ``headers``."""
        default_port = 443 if self.tls else 80
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if self.port != default_port:
            host = f"{host}:{self.port}"
        lines = f"POST {self.path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: gzip, deflate\r\n"
        return lines.encode("latin-1") + header_lines(headers)


def header_lines(headers: Mapping[str, str]) -> bytes:
    """``Name: value\\r\\n`` for each header (framing headers are the client's own)."""
    out = []
    for k, v in headers.items():
        if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
            raise ValueError(f"header {k!r}: line breaks are not allowed")
        if k.lower() not in ("host", "content-length", "transfer-encoding", "connection"):
            out.append(f"{k}: {v}\r\n")
    return "".join(out).encode("latin-1")


class Response:
    """One answer: ``status`` and ``headers`` once the head is in, then the body.

    For a stream, iterate it (``async for data in resp``: bytes as they arrive, any framing);
    else :meth:`read`. :meth:`close` (idempotent) gives the connection back when the answer was
    read to its end, else closes it.
    """

    __slots__ = (
        "_buf",
        "_conn",
        "_deadline",
        "_decoder",
        "_done",
        "_exc",
        "_pool",
        "_read_s",
        "_size",
        "_wait_all",
        "_waiter",
        "headers",
        "status",
    )  # fmt: skip

    def __init__(self, pool: Pool, conn: _Conn, read_s: float, deadline: float | None) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self._read_s = read_s
        self._deadline = deadline
        """Non-streams: one loop-clock deadline for the whole answer (else per wait)."""
        self.status = 0
        self.headers: Headers = Headers([])
        self._buf: list[bytes] = []
        self._size = 0
        self._done = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: Any = None
        self._wait_all = False
        """Set by :meth:`read`: the body is wanted whole, the socket is never paused."""

    # -- fed by the connection --------------------------------------------------------------

    def _head(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers
        enc = headers._d.get("content-encoding", "").strip().lower()
        if enc in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self._decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header
        self._wake()

    def _body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(ConnectionError(f"bad compressed body: {exc}"))
                return
            if not data:
                return
        self._buf.append(data)
        self._size += len(data)
        if self._size >= _PAUSE_AT and self._conn is not None and not self._wait_all:
            self._conn.pause()
        self._wake()

    def _end(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._buf.append(tail)
        self._done = True
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn)
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._done or self._exc is not None:
            return
        self._exc = exc
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            self._pool._release(conn)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    # -- read by the caller -----------------------------------------------------------------

    async def _wait(self) -> None:
        """Until the connection has news (head, body, end or failure), within the timeout."""
        loop = asyncio.get_running_loop()
        w = self._waiter = loop.create_future()
        at = self._deadline if self._deadline is not None else loop.time() + self._read_s
        timer = loop.call_at(at, _expire, w)
        try:
            await w
        finally:
            timer.cancel()
            self._waiter = None

    async def _head_in(self) -> None:
        while self.status == 0:
            if self._exc is not None:
                raise self._exc
            await self._wait()

    def __aiter__(self) -> Response:
        return self

    def read_nowait(self) -> bytes:
        """What :meth:`__anext__` would give now without waiting, or ``b""`` (nothing here
        yet, the end, a failure: :meth:`__anext__` then says which)."""
        buf = self._buf
        if not buf:
            return b""
        self._buf = []
        self._size = 0
        if self._conn is not None:
            self._conn.resume()
        return buf[0] if len(buf) == 1 else b"".join(buf)

    async def __anext__(self) -> bytes:
        while True:
            buf = self._buf
            if buf:
                self._buf = []
                self._size = 0
                if self._conn is not None:
                    self._conn.resume()
                return buf[0] if len(buf) == 1 else b"".join(buf)
            if self._done:
                raise StopAsyncIteration
            if self._exc is not None:
                raise self._exc
            await self._wait()

    async def read(self) -> bytes:
        """The whole body."""
        self._wait_all = True
        if self._conn is not None:
            self._conn.resume()
        while not self._done:
            if self._exc is not None:
                raise self._exc
            await self._wait()
        buf, self._buf, self._size = self._buf, [], 0
        return b"".join(buf)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:  # not read to its end: the connection cannot carry another
            conn.close()
            self._pool._release(conn)
        self._done = self._done or self._exc is None
        self._buf = []


def _expire(w: asyncio.Future[None]) -> None:
    if not w.done():
        w.set_exception(TimeoutError())


class _Conn(asyncio.Protocol):
    """One upstream connection: an httptools parser feeding the :class:`Response` in flight."""

    __slots__ = (
        "_headers", "_parser", "_paused", "closed", "counted", "idle_since", "key", "pool", "resp",
        "transport",
    )  # fmt: skip

    def __init__(self, pool: Pool, key: tuple[bool, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.counted = True
        """Counted in the pool's open connections (until :meth:`Pool._forget`)."""
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._paused = False
        self.resp: Response | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):  # not a TCP socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.resp is None:  # bytes on an idle connection: it cannot be reused
            self._lost(ConnectionError("bytes on an idle connection"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - never asked for
            self._lost(ConnectionError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._lost(ConnectionError(f"malformed HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self.resp
        if resp is not None and resp.status and not resp._done and self._until_close():
            self.resp = None
            resp._end()  # a body delimited by the connection's close
            return
        self._lost(ConnectionError(f"the upstream closed the connection: {exc or 'EOF'}"))

    def _until_close(self) -> bool:
        h = self.resp.headers if self.resp is not None else None
        return (
            h is not None
            and "content-length" not in h
            and "chunked" not in h._d.get("transfer-encoding", "").lower()
        )

    def _lost(self, exc: BaseException) -> None:
        resp, self.resp = self.resp, None
        if resp is not None:
            resp._fail(exc)
        else:  # idle (or already given up): out of the pool
            self.close()
            self.pool._forget(self)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        resp = self.resp
        status = self._parser.get_status_code()
        if resp is not None and status >= 200:  # an interim 1xx head: the answer follows
            resp._head(status, Headers(self._headers))

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is not None:
            resp._body(body)

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is None or resp.status == 0:  # nothing in flight, or the end of a 1xx
            return
        self.resp = None
        if not self._parser.should_keep_alive():
            self.close()
        resp._end()

    # -- pool side -----------------------------------------------------------------------------

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Pool:
    """Keep-alive connections per origin; ``limit`` connections at most in all (0: no limit),
    ``per_host`` per origin (0: no own limit)."""

    def __init__(self, *, limit: int = 1024, per_host: int = 0) -> None:
        self._limit = limit
        self._per_host = per_host
        self._idle: dict[tuple[bool, str, int], list[_Conn]] = {}
        self._open: collections.Counter[tuple[bool, str, int]] = collections.Counter()
        self._total = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl: ssl.SSLContext | None = None
        self._dns: dict[tuple[str, int], tuple[float, list[tuple[int, str, int]]]] = {}
        self.closed = False

    async def post(
        self,
        origin: Origin,
        head: bytes,
        body: bytes,
        *,
        connect_s: float,
        read_s: float,
        whole: bool,
    ) -> Response:
        """POST ``body`` with ``head`` (from :meth:`Origin.head`); the answer once its head is in.

        ``whole``: one deadline of ``read_s`` for the connection, the head and the body (read
        it with :meth:`Response.read`); else ``connect_s`` bounds the wait for a connection,
        ``read_s`` the wait for the head and each wait for body bytes.

        Raises:
            TimeoutError: a wait ran out.
            ConnectionError: no connection, or it broke before the head was in.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + read_s if whole else None
        conn = self._reuse(origin.key)
        if conn is None:
            wait_s = connect_s if deadline is None else min(connect_s, read_s)
            conn = await self._connect(origin, loop, wait_s)
        resp = Response(self, conn, read_s, deadline)
        conn.resp = resp
        assert conn.transport is not None
        conn.transport.write(b"%bContent-Length: %d\r\n\r\n%b" % (head, len(body), body))
        try:
            await resp._head_in()
        except BaseException:
            resp.close()
            raise
        return resp

    def _reuse(self, key: tuple[bool, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        stale = time.monotonic() - KEEPALIVE_S
        while idle:
            conn = idle.pop()
            t = conn.transport
            if (
                not conn.closed
                and conn.idle_since >= stale
                and t is not None
                and not t.is_closing()
            ):
                return conn
            conn.close()
            self._forget(conn)
        return None

    async def _connect(
        self, origin: Origin, loop: asyncio.AbstractEventLoop, wait_s: float
    ) -> _Conn:
        if self.closed:
            raise ConnectionError("the connection pool is closed")
        key = origin.key
        ends = loop.time() + wait_s
        while not self._room(key):
            if not self._evict_idle():
                w: asyncio.Future[None] = loop.create_future()
                self._waiters.append(w)
                timer = loop.call_at(ends, _expire, w)
                try:
                    await w
                except BaseException:
                    self._drop_waiter(w)
                    if w.done() and not w.cancelled() and w.exception() is None:
                        self._wake_one()  # woken, then cancelled: the turn goes to the next
                    raise
                finally:
                    timer.cancel()
                reused = self._reuse(key)
                if reused is not None:
                    return reused
        self._open[key] += 1
        self._total += 1
        conn = _Conn(self, key)
        try:
            ctx = self._ssl_context() if origin.tls else None
            async with asyncio.timeout_at(ends):
                await self._open_socket(conn, origin, loop, ctx)
        except BaseException as exc:
            conn.close()
            self._forget(conn)
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                raise ConnectionError(
                    f"cannot connect to {origin.host}:{origin.port}: {exc}"
                ) from exc
            raise
        return conn

    async def _open_socket(
        self,
        conn: _Conn,
        origin: Origin,
        loop: asyncio.AbstractEventLoop,
        ctx: ssl.SSLContext | None,
    ) -> None:
        """Connect ``conn`` to the origin's first address that answers (resolved names are
        kept :data:`DNS_TTL_S`, as aiohttp's connector kept them)."""
        name = origin.host
        hostname = name if ctx is not None else None
        if _is_ip(name):
            await loop.create_connection(
                lambda: conn, name, origin.port, ssl=ctx, server_hostname=hostname
            )
            return
        key = (name, origin.port)
        cached = self._dns.get(key)
        if cached is None or cached[0] < loop.time():
            infos = await loop.getaddrinfo(name, origin.port, type=socket.SOCK_STREAM)
            addrs = [(int(family), str(sa[0]), int(sa[1])) for family, _, _, _, sa in infos]
            if not addrs:  # pragma: no cover - getaddrinfo raises instead
                raise ConnectionError(f"{name} has no address")
            cached = self._dns[key] = (loop.time() + DNS_TTL_S, addrs)
        error: OSError | None = None
        for family, host, port in cached[1]:
            try:
                await loop.create_connection(
                    lambda: conn, host, port, family=family, ssl=ctx, server_hostname=hostname
                )
                return
            except ssl.SSLError:
                raise  # the host answered: another address would not make it trusted
            except OSError as exc:
                error = exc
        self._dns.pop(key, None)  # none answered: resolve afresh next time
        assert error is not None
        raise error

    def _room(self, key: tuple[bool, str, int]) -> bool:
        if self._limit and self._total >= self._limit:
            return False
        return not (self._per_host and self._open[key] >= self._per_host)

    def _evict_idle(self) -> bool:
        """Close one idle connection (another origin's: ours would have been reused)."""
        for idle in self._idle.values():
            while idle:
                conn = idle.pop(0)
                conn.close()
                self._forget(conn)
                return True
        return False

    def _release(self, conn: _Conn) -> None:
        """A connection is done with its answer: back to the pool, or gone when closed."""
        if conn.closed or self.closed:
            conn.close()
            self._forget(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)
        self._wake_one()

    def _forget(self, conn: _Conn) -> None:
        if not conn.counted:
            return
        conn.counted = False
        key = conn.key
        self._open[key] -= 1
        self._total -= 1
        idle = self._idle.get(key)
        if idle and conn in idle:
            idle.remove(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _drop_waiter(self, w: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(w)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def close(self) -> None:
        """Close every idle connection; those in use close when their answer is done."""
        self.closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for w in self._waiters:
            if not w.done():
                w.set_exception(ConnectionError("the connection pool is closed"))
        self._waiters.clear()
