"""Stop a listening socket taking new connections while the ones already queued are accepted.

Closing a listening socket resets every connection still in its accept queue: handshakes the
kernel completed that the server had not accepted yet. A proxy in front has already sent its
request on such a connection; a reset there is a 502 for a POST (nginx re-sends only requests
not yet sent, such as one whose connection was refused). So the drain first makes the socket
drop new connection attempts (their SYN; Linux, a classic BPF filter), lets the server accept
what is queued, and only then closes it: a dropped SYN is sent again a second later and then
meets a closed port, "connection refused", which a proxy re-sends to another replica.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import sys
from typing import Protocol

log = logging.getLogger("glm_gateway.edge")

SO_ATTACH_FILTER = 26
"""``<asm-generic/socket.h>``; not exported by Python's ``socket`` module."""
_TCP_FLAGS = 13
"""Offset of the flags byte in a TCP header (the filter sees the segment from its TCP header)."""
_SYN = 0x02


class _Insn(ctypes.Structure):
    """``struct sock_filter``: one classic BPF instruction."""

    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


_DROP_SYN = (_Insn * 4)(
    _Insn(0x30, 0, 0, _TCP_FLAGS),  # ldb [13]: A = TCP flags
    _Insn(0x45, 0, 1, _SYN),  # jset #SYN: next, else skip one
    _Insn(0x06, 0, 0, 0),  # ret #0: drop (a new connection attempt)
    _Insn(0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep (handshake ends, data, FIN)
)
"""Module-level and never freed: the kernel copies the program, but the ``sock_fprog`` handed
to it points here."""


class Sock(Protocol):
    def setsockopt(self, level: int, optname: int, value: bytes, /) -> None: ...


def refuse_new_connections(sock: Sock) -> bool:
    """Drop new connection attempts to the listening ``sock``; those already queued are still
    accepted. False (nothing done) where the kernel has no socket filters."""
    if not sys.platform.startswith("linux"):
        return False
    prog = struct.pack("HL", len(_DROP_SYN), ctypes.addressof(_DROP_SYN))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
    except OSError as exc:
        log.warning("could not stop new connections before closing the listener: %s", exc)
        return False
    return True
