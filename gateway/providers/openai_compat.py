"""The native adapter for every OpenAI-compatible host: one pool of keep-alive connections.

The only module that talks HTTP to upstreams. Requests go out on :mod:`gateway.providers.http1`
(a request head prebuilt per deployment, the body as orjson bytes); answers come back as raw
bytes (never parsed here). An aiohttp session serves :meth:`OpenAICompatProvider.get` (a plan's
quota endpoint, off the request path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from gateway.catalogue.target import Target
from gateway.providers.base import UpstreamConnectionError, UpstreamResponse, UpstreamTimeout
from gateway.providers.http1 import Origin, Pool, Response, header_lines

_JSON = "application/json"


class OpenAICompatProvider:
    """Sends chat completions to ``{base_url}/chat/completions`` over a shared pool."""

    def __init__(self, *, pool_size: int = 1024, per_host: int = 0) -> None:
        """``pool_size``: upstream connections open at once, over all hosts (give it the
        process's ``server.max_in_flight``); ``per_host``: per host, 0 = no own limit."""
        self._pool_size = pool_size
        self._per_host = per_host
        self._session: aiohttp.ClientSession | None = None
        self._pool: Pool | None = None
        self._heads: dict[str, tuple[Origin, bytes]] = {}
        """Per deployment: where its chat completions go and the request head (headers, key)."""
        self._headers: dict[str, dict[str, str]] = {}
        self._origins: dict[str, Origin] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,
                limit_per_host=self._per_host,
                ttl_dns_cache=300,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _headers_for(self, target: Target) -> dict[str, str]:
        h = self._headers.get(target.id)
        if h is None:
            h = {"Content-Type": _JSON, "Accept": "application/json, text/event-stream"}
            if target.api_key:
                h["Authorization"] = f"Bearer {target.api_key}"
            h.update(dict(target.headers))
            self._headers[target.id] = h
        return h

    def _get_pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(limit=self._pool_size, per_host=self._per_host)
        return self._pool

    def _head_for(self, target: Target) -> tuple[Origin, bytes]:
        """Built once per deployment: the URL parsed, the request head encoded."""
        got = self._heads.get(target.id)
        if got is None:
            origin = self._origin(f"{target.base_url}/chat/completions")
            got = self._heads[target.id] = (origin, origin.head(self._headers_for(target)))
        return got

    def _origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = Origin(url)
        return origin

    async def send(
        self,
        target: Target,
        body: dict[str, Any],
        *,
        stream: bool,
        connect_timeout: float,
        read_timeout: float,
        trace_headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        origin, head = self._head_for(target)
        if trace_headers:
            head += header_lines(trace_headers)
        return await self._post(
            target,
            origin,
            head,
            body,
            stream=stream,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    async def send_native(
        self,
        target: Target,
        url: str,
        headers: Mapping[str, str],
        body: dict[str, Any],
        *,
        stream: bool,
        connect_timeout: float,
        read_timeout: float,
        trace_headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """POST ``body`` to a host's own endpoint for the client's API (``url``, from config),
        with the deployment's key as ``x-api-key`` and bearer, and ``headers`` (checked)."""
        base = self._headers_for(target)
        sent = {**base, **headers, **(trace_headers or {})}
        if target.api_key:
            sent["x-api-key"] = target.api_key
        origin = self._origin(url)
        return await self._post(
            target,
            origin,
            origin.head(sent),
            body,
            stream=stream,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    async def _post(
        self,
        target: Target,
        origin: Origin,
        head: bytes,
        body: dict[str, Any],
        *,
        stream: bool,
        connect_timeout: float,
        read_timeout: float,
    ) -> UpstreamResponse:
        # A stream: ``connect_timeout`` bounds the wait for a (pooled or new) connection,
        # ``read_timeout`` the wait for the head and each wait for more bytes; no total, a stream
        # lasts as long as it keeps sending. Else ``read_timeout`` bounds it all (pool wait,
        # connect, head and body: one timer) and ``connect_timeout`` a new connection's connect.
        try:
            resp = await self._get_pool().post(
                origin,
                head,
                orjson.dumps(body),
                connect_s=connect_timeout,
                read_s=read_timeout,
                whole=not stream,
            )
        except TimeoutError as exc:
            if stream:  # the connect timer covers the wait for a pooled connection too
                raise UpstreamTimeout(
                    f"no connection to {target.provider} within {connect_timeout:g}s or no "
                    f"answer head within {read_timeout:g}s"
                ) from exc
            raise UpstreamTimeout(
                f"no answer from {target.provider} within {read_timeout:g}s"
            ) from exc
        except OSError as exc:  # ConnectionError, a name that does not resolve
            raise UpstreamConnectionError(f"{target.provider}: {exc!r}") from exc
        if not stream or resp.status >= 300:
            try:
                data = await resp.read()
            except TimeoutError as exc:
                raise UpstreamTimeout(f"{target.provider} body not complete in time") from exc
            except OSError as exc:
                raise UpstreamConnectionError(f"{target.provider}: {exc!r}") from exc
            finally:
                resp.close()
            return UpstreamResponse(resp.status, resp.headers, data)
        return UpstreamResponse(resp.status, resp.headers, chunks=_Chunks(resp))

    async def get(self, url: str, headers: Mapping[str, str], limit_s: float) -> tuple[int, bytes]:
        """``GET url`` off the request path (a plan's quota endpoint): (status, body).

        Raises:
            UpstreamTimeout: no full answer within ``limit_s``.
            UpstreamConnectionError: the host could not be reached.
        """
        try:
            async with self._get_session().get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=limit_s)
            ) as resp:
                return resp.status, await resp.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"no answer from {URL(url).host} within {limit_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectionError(f"{URL(url).host}: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Chunks:
    """A streaming answer's bytes as they arrive (what aiohttp's ``iter_any`` gave), its
    failures as the provider seam's; ``aclose`` ends the answer (and, before its end, closes
    the connection: the host sees the request cancelled)."""

    __slots__ = ("_resp",)

    def __init__(self, resp: Response) -> None:
        self._resp = resp

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._resp.__anext__()
        except TimeoutError as exc:
            raise UpstreamTimeout("stream stalled") from exc
        except OSError as exc:
            raise UpstreamConnectionError(f"stream broke: {exc!r}") from exc

    def read_nowait(self) -> bytes:
        """The bytes already received and not read yet (``b""``: none), without waiting."""
        return self._resp.read_nowait()

    async def aclose(self) -> None:
        self._resp.close()
