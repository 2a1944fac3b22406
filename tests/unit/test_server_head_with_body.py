"""The server's transport wrapper: an answer's head goes out with the body written in the same
loop step (one socket write, not two), alone at the end of the step when no body follows, and
before a close; bytes arrive whole and in order over a real loopback connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.edge.server import _HeadWithBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class Counting:
    """The real transport, with its write calls counted (each one is a socket write when the
    buffer is empty)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.t = transport
        self.calls: list[str] = []

    def write(self, data: bytes) -> None:
        self.calls.append("write")
        self.t.write(data)

    def writelines(self, parts: Any) -> None:
        self.calls.append("writelines")
        self.t.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.t, name)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Counting, asyncio.StreamReader]]:
    got: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await got.put((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    reader, writer = await got.get()
    yield Counting(transport), reader
    transport.abort()
    writer.close()
    server.close()
    await server.wait_closed()


async def test_a_head_and_its_body_in_one_step_are_one_write(
    pair: tuple[Counting, asyncio.StreamReader],
) -> None:
    counting, reader = pair
    t = _HeadWithBody(counting, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    assert counting.calls == [] and t.get_write_buffer_size() == len(HEAD)
    t.write(b"hello")
    assert counting.calls == ["writelines"]
    assert await reader.readexactly(len(HEAD) + 5) == HEAD + b"hello"
    await asyncio.sleep(0)  # the end-of-step flush finds nothing left
    assert counting.calls == ["writelines"]


async def test_a_head_alone_goes_at_the_end_of_the_step_and_later_parts_go_at_once(
    pair: tuple[Counting, asyncio.StreamReader],
) -> None:
    counting, reader = pair
    t = _HeadWithBody(counting, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    await asyncio.sleep(0)
    assert counting.calls == ["write"]
    assert await reader.readexactly(len(HEAD)) == HEAD
    t.write(b"data: 1\n\n")  # a stream's events: written as they come
    assert counting.calls == ["write", "write"]
    assert await reader.readexactly(9) == b"data: 1\n\n"


async def test_close_sends_a_held_head_first_and_abort_drops_it(
    pair: tuple[Counting, asyncio.StreamReader],
) -> None:
    counting, reader = pair
    t = _HeadWithBody(counting, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(HEAD)
    t.close()
    assert counting.calls == ["write"]
    assert await reader.readexactly(len(HEAD)) == HEAD
    assert await reader.read() == b""  # then the connection closed
    assert t.is_closing()  # everything else is the real transport's
