"""The request path's HTTP/1.1 client (gateway/providers/http1.py) against real loopback
servers: framing (Content-Length, chunked, until close, gzip), keep-alive reuse, closing a
stream early, a host that closes idle connections, pool limits, timeouts, errors, TLS."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.providers.base import UpstreamConnectionError, UpstreamTimeout
from gateway.providers.http1 import Headers, Origin, Pool
from gateway.providers.openai_compat import OpenAICompatProvider

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw TCP server: each connection runs ``handler``; counts connections and requests."""

    def __init__(self, handler: Handler, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_ctx = ssl_ctx
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_peer = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self.handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            w.close()

    async def read_request(self, r: asyncio.StreamReader) -> bytes | None:
        """One request (head and Content-Length body), or None at EOF."""
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_peer.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await r.readexactly(length)
        self.requests.append(head + body)
        return head + body

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_ctx else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1/chat/completions"


def answer(body: bytes, *, ctype: bytes = b"application/json", extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\n" + extra
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


def keep_answering(server_ref: list[Server], data: bytes) -> Handler:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await server_ref[0].read_request(r) is not None:
            w.write(data)
            await w.drain()

    return handler


async def serve(handler_for: Callable[[list[Server]], Handler], **kw: Any) -> Server:
    ref: list[Server] = []
    server = Server(lambda r, w: handler_for(ref)(r, w), **kw)
    ref.append(server)
    return server


async def post(
    pool: Pool, url: str, body: bytes = b"{}", *, whole: bool = True, read_s: float = 5.0,
    connect_s: float = 5.0, headers: dict[str, str] | None = None,
) -> Any:  # fmt: skip
    origin = Origin(url)
    return await pool.post(
        origin,
        origin.head(headers or {"Content-Type": "application/json"}),
        body,
        connect_s=connect_s,
        read_s=read_s,
        whole=whole,
    )


async def test_content_length_answers_reuse_one_connection() -> None:
    async with await serve(lambda ref: keep_answering(ref, answer(b'{"ok":1}'))) as srv:
        pool = Pool()
        for _ in range(3):
            resp = await post(pool, srv.url, b'{"a":1}', headers={"Authorization": "Bearer k"})
            assert resp.status == 200 and await resp.read() == b'{"ok":1}'
            assert resp.headers["content-type"] == "application/json"
            assert resp.headers["Content-Type"] == "application/json"
        pool.close()
    assert srv.connections == 1, "keep-alive: one connection for three requests"
    first = srv.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer k\r\n" in first and b"\r\nContent-Length: 7\r\n" in first
    assert first.endswith(b'\r\n\r\n{"a":1}')


async def test_chunked_stream_arrives_as_sent_and_the_connection_is_reused() -> None:
    go = asyncio.Event()

    def handler(ref: list[Server]) -> Handler:
        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while await ref[0].read_request(r) is not None:
                w.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                w.write(b"%x\r\n%b\r\n" % (len(b"data: 1\n\n"), b"data: 1\n\n"))
                await w.drain()
                await go.wait()
                go.clear()
                w.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(b"data: 2\n\n"), b"data: 2\n\n"))
                await w.drain()

        return h

    async with await serve(handler) as srv:
        pool = Pool()
        for _ in range(2):
            resp = await post(pool, srv.url, whole=False)
            assert resp.status == 200 and resp.headers["transfer-encoding"] == "chunked"
            it = aiter(resp)
            assert await anext(it) == b"data: 1\n\n"  # before the rest was sent
            go.set()
            assert await anext(it) == b"data: 2\n\n"
            with pytest.raises(StopAsyncIteration):
                await anext(it)
            resp.close()
        pool.close()
    assert srv.connections == 1


async def test_read_nowait_gives_what_arrived_without_waiting() -> None:
    go = asyncio.Event()

    def handler(ref: list[Server]) -> Handler:
        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await ref[0].read_request(r)
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            w.write(b"%x\r\n%b\r\n" % (len(b"data: 1\n\n"), b"data: 1\n\n"))
            await w.drain()
            await go.wait()
            w.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(b"data: 2\n\n"), b"data: 2\n\n"))
            await w.drain()

        return h

    async with await serve(handler) as srv:
        pool = Pool()
        resp = await post(pool, srv.url, whole=False)
        for _ in range(100):  # until the first chunk is in
            if resp._buf:
                break
            await asyncio.sleep(0.01)
        assert resp.read_nowait() == b"data: 1\n\n"
        assert resp.read_nowait() == b""  # nothing more yet: no wait
        go.set()
        it = aiter(resp)
        assert await anext(it) == b"data: 2\n\n"
        with pytest.raises(StopAsyncIteration):
            await anext(it)
        assert resp.read_nowait() == b""
        resp.close()
        pool.close()


async def test_body_until_close_and_repeated_headers() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nConnection: close\r\n\r\nall of it")
        await w.drain()
        w.close()

    async with Server(handler) as srv:
        pool = Pool()
        resp = await post(pool, srv.url)
        assert await resp.read() == b"all of it"
        assert resp.headers["X-A"] == "1, 2" and "x-a" in resp.headers and len(resp.headers) == 2
        pool.close()


async def test_gzip_body_is_decompressed() -> None:
    data = gzip.compress(b'{"big":"' + b"x" * 5000 + b'"}')
    gz = answer(data, extra=b"Content-Encoding: gzip\r\n")
    async with await serve(lambda ref: keep_answering(ref, gz)) as srv:
        pool = Pool()
        resp = await post(pool, srv.url)
        assert await resp.read() == b'{"big":"' + b"x" * 5000 + b'"}'
        pool.close()
    assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in srv.requests[0]


async def test_closing_a_stream_early_closes_its_connection() -> None:
    def handler(ref: list[Server]) -> Handler:
        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while await ref[0].read_request(r) is not None:
                w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                await w.drain()  # never ends the body

        return h

    async with await serve(handler) as srv:
        pool = Pool()
        resp = await post(pool, srv.url, whole=False)
        assert await anext(aiter(resp)) == b"first"
        resp.close()
        await asyncio.wait_for(srv.closed_by_peer.wait(), 5)  # the host sees the request end
        resp = await post(pool, srv.url, whole=False)  # a new connection, not the cut one
        assert await anext(aiter(resp)) == b"first"
        resp.close()
        pool.close()
    assert srv.connections == 2


async def test_a_connection_the_host_closed_while_idle_is_not_reused() -> None:
    def handler(ref: list[Server]) -> Handler:
        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            if await ref[0].read_request(r) is not None:
                w.write(answer(b"{}"))
                await w.drain()
            # then close: a host's idle timeout

        return h

    async with await serve(handler) as srv:
        pool = Pool()
        assert await (await post(pool, srv.url)).read() == b"{}"
        for _ in range(50):  # the FIN reaches the idle connection
            await asyncio.sleep(0.01)
            if not pool._idle.get(Origin(srv.url).key):
                break
        assert await (await post(pool, srv.url)).read() == b"{}"
        assert pool._total == 1
        pool.close()
    assert srv.connections == 2


async def test_pool_limit_queues_then_times_out() -> None:
    release = asyncio.Event()

    def handler(ref: list[Server]) -> Handler:
        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while await ref[0].read_request(r) is not None:
                await release.wait()
                w.write(answer(b"{}"))
                await w.drain()

        return h

    async with await serve(handler) as srv:
        pool = Pool(limit=1)
        first = asyncio.create_task(post(pool, srv.url))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):  # no connection free within connect_s
            await post(pool, srv.url, whole=False, connect_s=0.1)
        second = asyncio.create_task(post(pool, srv.url))
        await asyncio.sleep(0.05)
        release.set()
        for t in (first, second):
            assert await (await t).read() == b"{}"
        pool.close()
    assert srv.connections == 1, "the waiter took the released connection"


async def test_timeouts_head_body_and_whole() -> None:
    def handler(ref: list[Server]) -> Handler:
        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            req = await ref[0].read_request(r)
            if req is not None and req.endswith(b"stall-body"):
                w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
                await w.drain()
            await asyncio.sleep(30)

        return h

    async with await serve(handler) as srv:
        pool = Pool()
        with pytest.raises(TimeoutError):
            await post(pool, srv.url, b"stall-head", whole=False, read_s=0.1)
        resp = await post(pool, srv.url, b"stall-body", whole=False, read_s=0.2)
        it = aiter(resp)
        assert await anext(it) == b"a"
        with pytest.raises(TimeoutError):
            await anext(it)
        resp.close()
        resp = await post(pool, srv.url, b"stall-body", whole=True, read_s=0.2)
        with pytest.raises(TimeoutError):  # one deadline for the whole answer
            await resp.read()
        resp.close()
        pool.close()
        assert pool._total == 0, "timed-out connections are not kept"


async def test_refused_and_malformed_are_connection_errors() -> None:
    pool = Pool()
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(ConnectionError):
        await post(pool, f"http://127.0.0.1:{port}/v1")

    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"NOT HTTP AT ALL\r\n\r\n")
        await w.drain()
        await asyncio.sleep(1)

    async with Server(garbage) as srv:
        with pytest.raises(ConnectionError):
            await post(pool, srv.url)

    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await w.drain()
        w.close()

    async with Server(cut) as srv:
        resp = await post(pool, srv.url)
        with pytest.raises(ConnectionError):  # the body ended short of its length
            await resp.read()
    assert pool._total == 0
    pool.close()


async def test_header_values_with_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError):
        Origin("http://h/v1").head({"X-Evil": "a\r\nInjected: 1"})
    with pytest.raises(ValueError):
        Origin("ftp://h/v1")
    assert Origin("https://h/v1?x=1").head({}).startswith(b"POST /v1?x=1 HTTP/1.1\r\nHost: h\r\n")
    assert dict(Headers([(b"A", b"1")])) == {"a": "1"}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_with_the_host_verified(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    ok = answer(b"{}")
    async with await serve(lambda ref: keep_answering(ref, ok), ssl_ctx=server_ctx) as srv:
        pool = Pool()
        with pytest.raises(ConnectionError):  # the default context does not trust it
            await post(pool, srv.url)
        pool.close()
        pool = Pool()
        pool._ssl = ssl.create_default_context(cafile=str(cert))
        for _ in range(2):
            assert await (await post(pool, srv.url)).read() == b"{}"
        pool.close()
    assert srv.connections == 1  # one kept-alive connection (the refused one never served)


async def test_provider_maps_failures_to_the_seams_errors() -> None:
    target = SimpleNamespace(id="t", base_url="", api_key="k", headers={}, provider="p")

    def handler(ref: list[Server]) -> Handler:
        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while (req := await ref[0].read_request(r)) is not None:
                if b'"stream":true' in req:
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
                    w.write(b"Transfer-Encoding: chunked\r\n\r\na\r\ndata: {}\n\n\r\n")
                    await w.drain()
                    await asyncio.sleep(30)
                else:
                    w.write(answer(b'{"id":"x"}', extra=b"Retry-After: 3\r\n"))
                    await w.drain()

        return h

    async with await serve(handler) as srv:
        target.base_url = srv.url.removesuffix("/chat/completions")
        provider = OpenAICompatProvider(pool_size=4)
        got = await provider.send(
            target,  # type: ignore[arg-type]
            {"stream": False},
            stream=False,
            connect_timeout=1,
            read_timeout=5,
            trace_headers={"traceparent": "00-abc-def-01"},
        )
        assert got.status == 200 and got.body == b'{"id":"x"}'
        assert got.headers.get("retry-after") == "3"
        assert b"\r\ntraceparent: 00-abc-def-01\r\n" in srv.requests[-1]
        assert b"\r\nAuthorization: Bearer k\r\n" in srv.requests[-1]
        stream = await provider.send(
            target,  # type: ignore[arg-type]
            {"stream": True},
            stream=True,
            connect_timeout=1,
            read_timeout=0.2,
        )
        assert stream.chunks is not None
        chunks: AsyncIterator[bytes] = stream.chunks
        assert await anext(chunks) == b"data: {}\n\n"
        with pytest.raises(UpstreamTimeout, match="stream stalled"):
            await anext(chunks)
        await stream.close()
        await provider.aclose()
    provider = OpenAICompatProvider()
    target.base_url = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    with pytest.raises(UpstreamConnectionError):
        await provider.send(
            target,  # type: ignore[arg-type]
            {},
            stream=True,
            connect_timeout=1,
            read_timeout=1,
        )
    await provider.aclose()


async def test_a_slow_reader_pauses_the_socket_and_a_big_body_still_reads_whole() -> None:
    big = b"x" * (3 << 20)
    async with await serve(lambda ref: keep_answering(ref, answer(big))) as srv:
        pool = Pool()
        resp = await post(pool, srv.url, whole=False)
        got = b""
        async for data in resp:  # paused above 1 MiB unread, resumed as it is taken
            got += data
        assert got == big
        resp = await post(pool, srv.url)
        assert await resp.read() == big
        pool.close()
    assert srv.connections == 1


async def test_a_connection_idle_past_the_keepalive_is_closed_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gateway.providers.http1 as http1

    async with await serve(lambda ref: keep_answering(ref, answer(b"{}"))) as srv:
        pool = Pool()
        assert await (await post(pool, srv.url)).read() == b"{}"
        monkeypatch.setattr(http1, "KEEPALIVE_S", 0.0)
        await asyncio.sleep(0.01)
        assert await (await post(pool, srv.url)).read() == b"{}"
        assert pool._total == 1
        pool.close()
    assert srv.connections == 2


async def test_a_host_name_is_resolved_once_and_each_address_tried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def handler(ref: list[Server]) -> Handler:
        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            if await ref[0].read_request(r) is not None:
                w.write(answer(b"{}", extra=b"Connection: close\r\n"))
                await w.drain()

        return h

    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, **kw: Any) -> Any:
        lookups.append(host)
        got = await real("127.0.0.1", port, **kw)
        dead = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 9))  # discard: refused
        return [dead, *got]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    async with await serve(handler) as srv:
        pool = Pool()
        url = srv.url.replace("127.0.0.1", "upstream.example")
        for _ in range(2):  # the host closes each connection: two connects, one lookup
            resp = await post(pool, url)
            assert await resp.read() == b"{}"
        pool.close()
    assert lookups == ["upstream.example"] and srv.connections == 2
    assert srv.requests[0].split(b"\r\n")[1].startswith(b"Host: upstream.example:")
