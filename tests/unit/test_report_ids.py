"""Report ids stay unique across ``serve --workers N``: a forked child draws its own prefix
(two workers sharing one would skip each other's reports as already settled)."""

from __future__ import annotations

import os

from gateway.state import redis as state_redis


def test_a_forked_child_draws_its_own_report_prefix() -> None:
    parent = state_redis._REPORT_PREFIX
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its prefix and leave at once
        os.write(write, state_redis._REPORT_PREFIX.encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child.endswith("-") and len(child) == len(parent)
    assert child != parent
    assert parent == state_redis._REPORT_PREFIX  # the parent's is untouched
