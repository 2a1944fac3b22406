"""Connections to the Redis that holds the shared state: one server, Sentinel or Cluster.

:class:`Link` gives :class:`~gateway.state.redis.RedisState` two plain ``redis.asyncio.Redis``
clients on the server that holds its keys (the slow one with socket timeouts, the hot one
without: the auto-pipeline bounds each batch itself) and one way back after a failure,
:meth:`Link.relocate`, whatever the mode:

- single: the URL's server.
- Sentinel: redis-py's ``SentinelConnectionPool``: every new connection asks the sentinels
  for the current master; one to a demoted master fails on its first write.
- Cluster: every key is in one slot (:mod:`gateway.state.redis_target`), so every command goes
  to one master. :class:`_SlotOwnerPool` connects to the primary that owns that slot, found
  with redis-py's ``RedisCluster`` topology (``CLUSTER SLOTS`` via any seed node); after a
  failure the topology is read again. A script sent to a node that lost the slot fails (a
  non-local key), which the backend takes as Redis down.

Failures of any kind surface as ``RedisError`` / ``OSError`` / ``TimeoutError`` and go down the
backend's one degraded path (:mod:`gateway.state.outage`); nothing here retries or waits past
the timeouts it is given.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from gateway.state.redis_target import RedisTarget

ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
"""What a Redis call raises when the server is away, slow, or no longer the master."""


class Link:
    def __init__(self, target: RedisTarget, key: str, *, timeout: float) -> None:
        """``key``: any key of the state (Cluster mode finds its slot's owner); ``timeout``:
        socket connect timeout everywhere, and read timeout of the slow client."""
        self.target = target
        no_retry = Retry(NoBackoff(), 0)
        slow: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": no_retry,
        }
        # socket_timeout=None said out loud: redis-py 8 defaults it to 5 s
        hot = {**slow, "socket_timeout": None}
        # the data servers' credentials; redis-py lets a URL's own replace them
        slow_auth = {**slow, **target.credentials()}
        hot_auth = {**hot, **target.credentials()}
        self._sentinel: Sentinel | None = None
        self._owner: _SlotOwner | None = None
        pools: tuple[ConnectionPool, ConnectionPool]
        if target.mode == "single":
            url = target.url or ""
            pools = (
                ConnectionPool.from_url(url, **slow_auth),
                ConnectionPool.from_url(url, **hot_auth),
            )
        elif target.mode == "sentinel":
            sentinel_auth = (
                {"password": target.sentinel_password} if target.sentinel_password else {}
            )
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(target.nodes),
                sentinel_kwargs={"retry": no_retry, **slow, **sentinel_auth},
            )
            pools = (
                SentinelConnectionPool(target.service, self._sentinel, **slow_auth),  # type: ignore[no-untyped-call]
                SentinelConnectionPool(target.service, self._sentinel, **hot_auth),  # type: ignore[no-untyped-call]
            )
        else:
            self._owner = _SlotOwner(target.nodes, key, timeout, target.credentials())
            pools = (
                _SlotOwnerPool(self._owner, **slow_auth),
                _SlotOwnerPool(self._owner, **hot_auth),
            )
        self._pools = pools
        self.slow = Redis(connection_pool=pools[0], retry=no_retry)
        """Admin, health, resync: each call bounded by ``timeout``."""
        self.hot = Redis(connection_pool=pools[1], retry=no_retry)
        """The auto-pipeline's connections (it bounds each batch)."""

    async def relocate(self) -> None:
        """After a failure: drop every connection (they lead to a server that went away or
        is no longer the master); the next ones find the master again."""
        if self._owner is not None:
            self._owner.forget()
        for pool in self._pools:
            await pool.disconnect()

    async def aclose(self) -> None:
        await self.slow.aclose(close_connection_pool=True)
        await self.hot.aclose(close_connection_pool=True)
        if self._sentinel is not None:
            await self._sentinel.aclose()
        if self._owner is not None:
            await self._owner.aclose()


class _SlotOwner:
    """Where the master of ``key``'s slot is: read from the cluster's topology once, and
    again after :meth:`forget`."""

    def __init__(
        self,
        nodes: tuple[tuple[str, int], ...],
        key: str,
        timeout: float,
        credentials: dict[str, str],
    ) -> None:
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            username=credentials.get("username"),
            password=credentials.get("password"),
            require_full_coverage=False,  # another shard down is not ours to wait for
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._key = key
        self._timeout = timeout
        self._address: tuple[str, int] | None = None
        self._lock = asyncio.Lock()

    async def address(self) -> tuple[str, int]:
        if self._address is None:
            async with self._lock:
                if self._address is None:
                    try:
                        async with asyncio.timeout(self._timeout):
                            await self._cluster.nodes_manager.initialize()
                        node = self._cluster.get_node_from_key(self._key)
                    except RedisClusterException as exc:  # no seed answered, slot not covered
                        raise RedisConnectionError(str(exc)) from exc
                    if node is None:  # pragma: no cover - redis-py raises first
                        raise RedisConnectionError(f"no cluster node serves {self._key!r}")
                    self._address = (node.host, int(node.port))
        return self._address

    def forget(self) -> None:
        self._address = None

    async def aclose(self) -> None:
        await self._cluster.aclose()
        await self._cluster.nodes_manager.aclose()
        await self._cluster.nodes_manager.aclose("startup_nodes")


class _SlotOwnerConnection(Connection):
    """A connection to whichever primary owns the slot (as ``SentinelManagedConnection`` is
    to whichever server the sentinels call master)."""

    def __init__(self, **kwargs: Any) -> None:
        self._owner: _SlotOwner = kwargs.pop("slot_owner")
        super().__init__(**kwargs)

    async def connect(self) -> None:
        await self.connect_check_health(check_health=True, retry_socket_connect=False)

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected:
            self.host, self.port = await self._owner.address()
        await super().connect_check_health(check_health, retry_socket_connect=False)


class _SlotOwnerPool(ConnectionPool):
    def __init__(self, owner: _SlotOwner, **kwargs: Any) -> None:
        super().__init__(connection_class=_SlotOwnerConnection, **kwargs)
        self.connection_kwargs["slot_owner"] = owner
