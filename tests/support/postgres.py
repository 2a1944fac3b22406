"""PostgreSQL for tests: a database of one's own on the shared server, or a server of one's own.

:func:`scratch_database` creates a uniquely named database on the server at
``GLM_GATEWAY_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``: ``.ci/run``
starts one where none answers; without it, one of this process's own) and drops it at the end,
so tests never share rows.
:class:`OwnPostgres` runs ``initdb`` + ``postgres`` on a free port in a temp dir: a server a test
may kill (SIGKILL, the whole process group) and start again on the same data and port. As root
it runs as the ``postgres`` user (the server refuses root).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.procs import OUT, free_port

SHARED = os.environ.get("GLM_GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def shared_server_up() -> bool:
    try:
        with psycopg.connect(SHARED, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


_server: list[str] = []
"""The server this test process uses, once chosen: the shared one, else one of its own."""


def server_url() -> str:
    """The shared server when it answers with trust auth, else a server of this test process's
    own (``make test`` on a fresh machine: nothing listens on 5432, or Debian's just-installed
    cluster asks for a password), started once and stopped at exit."""
    if not _server:
        if shared_server_up():
            _server.append(SHARED)
        else:
            own = OwnPostgres()
            atexit.register(own.close)
            _server.append(own.url)
    return _server[0]


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh database's URL on :func:`server_url`, dropped afterwards."""
    server = server_url()
    name = f"glmgw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


class OwnPostgres:
    """A PostgreSQL server owned by one test: ``kill()`` it, ``start()`` it again."""

    def __init__(self) -> None:
        initdb, postgres = _binary("initdb"), _binary("postgres")
        if initdb is None or postgres is None:
            pytest.skip("initdb/postgres are not installed (Debian package postgresql)")
        self._postgres = postgres
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="glmgw-pg-"))
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                        "--init-groups"]  # fmt: skip
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        subprocess.run(
            [*self._as, initdb, "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        log = (OUT / f"postgres-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [*self._as, self._postgres, "-D", str(self.dir / "data"), "-p", str(self.port),
             "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "full_page_writes=off"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: see {OUT}/postgres-{self.port}.log")
            try:
                with psycopg.connect(self.url, connect_timeout=1):
                    return
            except psycopg.Error:
                time.sleep(0.1)
        raise RuntimeError(f"postgres on {self.port} did not answer")

    def kill(self) -> None:
        """SIGKILL the server and every backend (no shutdown: a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
