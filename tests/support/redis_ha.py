"""Redis beyond one server, on loopback: a Redis Cluster and a Sentinel group of real
``redis-server`` processes on free ports, owned by one test (or module).

- :class:`RedisClusterGroup`: three masters and one replica each (``--cluster-enabled yes``,
  joined with ``redis-cli --cluster create``); ``cluster-node-timeout`` 1 s so that a killed
  master's replica takes over within a few seconds.
- :class:`SentinelGroup`: a master, one replica and three sentinels (quorum 2),
  ``down-after-milliseconds`` 1 s.

Both take a ``password`` (every data node's ``requirepass`` and ``masterauth``); the sentinels
take their own (``sentinel_password``).

``fail_master`` kills (SIGKILL) the master that serves the gateway's keys and returns once a
replica serves them instead; every wait polls for a state with a bound.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis

from tests.support.procs import OUT, free_port
from tests.support.redis_server import RedisServer

NODE_TIMEOUT_MS = 1000


def until(check: Callable[[], bool], what: str, limit: float = 30) -> None:
    end = time.monotonic() + limit
    while True:
        try:
            if check():
                return
        except Exception:  # a node still starting or just killed: look again
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)


def client(port: int, password: str | None = None) -> Redis:
    return Redis(
        port=port,
        password=password,
        socket_timeout=2,
        socket_connect_timeout=2,
        decode_responses=True,
    )


def _auth_flags(password: str | None) -> list[str]:
    return ["--requirepass", password, "--masterauth", password] if password else []


def _master_port(node: RedisServer, password: str | None) -> int | None:
    """The port of the master ``node`` replicates (None: it is a master)."""
    c = client(node.port, password)
    try:
        info = c.info("replication")
        return int(info["master_port"]) if info["role"] == "slave" else None
    finally:
        c.close()


class RedisClusterGroup:
    def __init__(self, masters: int = 3, replicas: int = 1, password: str | None = None) -> None:
        self.password = password
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH (.ci/run installs it)")
        flags = [
            "--cluster-enabled", "yes",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor", "0",
            *_auth_flags(password),
        ]  # fmt: skip
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(
                (1 + replicas) * masters
            ):  # the bus on a free port too (default: port + 10000)
                self.nodes.append(RedisServer(extra=[*flags, "--cluster-port", str(free_port())]))
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *addrs,
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=60,
                env={**os.environ, "REDISCLI_AUTH": password} if password else None,
            )
            until(self._settled, "the cluster to be ok, with every replica in sync")
        except BaseException:
            self.close()
            raise

    @property
    def seeds(self) -> str:
        """``GLM_GATEWAY_REDIS_CLUSTER_NODES``: every node (a killed one is skipped)."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def _alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None]

    def _settled(self) -> bool:
        for n in self._alive():
            c = client(n.port, self.password)
            try:
                if "cluster_state:ok" not in str(c.execute_command("CLUSTER", "INFO")):
                    return False
                info = c.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
            finally:
                c.close()
        return True

    def owner(self, key: str) -> RedisServer:
        """The master that serves ``key``'s slot, as the live nodes see it."""
        for n in self._alive():
            c = client(n.port, self.password)
            try:
                slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        port = int(master[1])
                        return next(x for x in self.nodes if x.port == port)
            finally:
                c.close()
        raise RuntimeError("no live cluster node")

    def fail_master(self, key: str) -> RedisServer:
        """SIGKILL the master of ``key``'s slot; returns its replica once it took over."""
        old = self.owner(key)
        old.kill()

        def promoted() -> bool:
            return self.owner(key).port != old.port and self._settled()

        until(promoted, f"a replica to take over from {old.port}")
        return self.owner(key)

    def revive(self) -> None:
        """Start killed nodes again (same port and cluster config): they rejoin as replicas."""
        dead = [n for n in self.nodes if n.proc is None]
        for n in dead:
            n.start()
        if dead:
            until(self._settled, "the revived nodes to rejoin as replicas, in sync")

    def switch_master(self, key: str) -> RedisServer:
        """``CLUSTER FAILOVER`` on the replica of ``key``'s master: the old master stays up,
        demoted to a replica. Returns the new master."""
        old = self.owner(key)
        replica = next(n for n in self._alive() if _master_port(n, self.password) == old.port)
        c = client(replica.port, self.password)
        try:
            c.execute_command("CLUSTER", "FAILOVER")
        finally:
            c.close()

        def switched() -> bool:
            return (
                self.owner(key).port == replica.port
                and _master_port(old, self.password) == replica.port
            )

        until(switched, f"{replica.port} to take over from {old.port}")
        return replica

    def close(self) -> None:
        for n in self.nodes:
            n.close()


class Sentinel:
    """``redis-server <conf> --sentinel`` on a free port."""

    def __init__(
        self,
        master_port: int,
        directory: Path,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.port = free_port()
        self.password = sentinel_password
        conf = directory / f"sentinel-{self.port}.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"logfile {OUT / f'sentinel-{self.port}.log'}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds mymaster {NODE_TIMEOUT_MS}\n"
            "sentinel failover-timeout mymaster 5000\n"
            + (f"sentinel auth-pass mymaster {password}\n" if password else "")
            # the sentinels' own password, which they also use with each other
            + (
                f"requirepass {sentinel_password}\nsentinel sentinel-pass {sentinel_password}\n"
                if sentinel_password
                else ""
            )
        )
        binary = shutil.which("redis-server") or "redis-server"
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def master_port(self) -> int:
        c = client(self.port, self.password)
        try:
            _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
            return int(port)
        finally:
            c.close()

    def knows_everyone(self) -> bool:
        c = client(self.port, self.password)
        try:
            replicas = c.execute_command("SENTINEL", "REPLICAS", "mymaster")
            peers = c.execute_command("SENTINEL", "SENTINELS", "mymaster")
            return len(replicas) >= 1 and len(peers) >= 2
        finally:
            c.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class SentinelGroup:
    service = "mymaster"

    def __init__(self, password: str | None = None, sentinel_password: str | None = None) -> None:
        self.password = password
        OUT.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="glmgw-sentinel-"))
        self.servers: list[RedisServer] = []
        self.sentinels: list[Sentinel] = []
        try:
            auth = _auth_flags(password)
            master = RedisServer(extra=auth)
            self.servers.append(master)
            replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port), *auth])
            self.servers.append(replica)
            self.sentinels = [
                Sentinel(master.port, self._dir, password, sentinel_password) for _ in range(3)
            ]
            until(self._settled, "the sentinels to know the replica and each other")
        except BaseException:
            self.close()
            raise

    @property
    def addresses(self) -> str:
        """``GLM_GATEWAY_REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def master(self) -> RedisServer:
        port = self.sentinels[0].master_port()
        return next(s for s in self.servers if s.port == port)

    def _settled(self) -> bool:
        master = self.master().port
        replica = next(s for s in self.servers if s.port != master)
        c = client(replica.port, self.password)
        try:
            info = c.info("replication")
            in_sync = info.get("master_link_status") == "up" and info["master_port"] == master
        finally:
            c.close()
        return in_sync and all(s.knows_everyone() for s in self.sentinels)

    def fail_master(self) -> RedisServer:
        """SIGKILL the master; returns the replica once every sentinel calls it master."""
        old = self.master()
        old.kill()

        def promoted() -> bool:
            ports = {s.master_port() for s in self.sentinels}
            if ports == {old.port} or len(ports) != 1:
                return False
            c = client(ports.pop(), self.password)
            try:
                return c.info("replication")["role"] == "master"
            finally:
                c.close()

        until(promoted, f"the sentinels to promote the replica of {old.port}")
        return self.master()

    def revive(self) -> None:
        """Start a killed server again: the sentinels make it a replica of the master."""
        dead = [r for r in self.servers if r.proc is None]
        for r in dead:
            r.start()
        if dead:
            until(self._settled, "the revived server to replicate the master")

    def switch_master(self) -> RedisServer:
        """``SENTINEL FAILOVER``: the old master stays up, demoted to a replica."""
        old = self.master()
        c = client(self.sentinels[0].port, self.sentinels[0].password)
        try:
            c.execute_command("SENTINEL", "FAILOVER", self.service)
        finally:
            c.close()

        def switched() -> bool:
            ports = {s.master_port() for s in self.sentinels}
            return (
                ports != {old.port}
                and len(ports) == 1
                and _master_port(old, self.password) == ports.pop()
            )

        until(switched, f"the sentinels to move the master off {old.port}")
        return self.master()

    def close(self) -> None:
        for s in self.sentinels:
            s.close()
        for r in self.servers:
            r.close()
        shutil.rmtree(self._dir, ignore_errors=True)
