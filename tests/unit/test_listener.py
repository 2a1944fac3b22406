"""The drain's listener: new connection attempts dropped, queued connections still accepted."""

from __future__ import annotations

import select
import socket
import sys

import pytest

from gateway.edge.listener import refuse_new_connections

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux filters")


def test_queued_connections_are_accepted_and_new_ones_get_no_answer() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        served = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn, _ = srv.accept()
        queued = socket.create_connection(("127.0.0.1", port), timeout=5)  # not accepted yet
        assert refuse_new_connections(srv)
        late = socket.socket()
        late.setblocking(False)
        assert late.connect_ex(("127.0.0.1", port)) != 0  # in progress: SYN sent
        try:
            served.sendall(b"still")
            assert conn.recv(5) == b"still"  # an established connection is untouched
            srv.settimeout(5)
            accepted, _ = srv.accept()  # the queued one survives
            queued.sendall(b"queued")
            assert accepted.recv(6) == b"queued"
            accepted.close()
            # The late attempt's SYN was dropped: no SYN-ACK, so it never becomes writable.
            assert select.select([], [late], [], 0.3)[1] == []
        finally:
            for s in (served, conn, queued, late):
                s.close()
