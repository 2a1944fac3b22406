"""The native adapter for every OpenAI-compatible host: one pooled aiohttp session.

The only module that talks HTTP to upstreams. The body goes out as orjson bytes; answers come
back as raw bytes (never parsed here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from gateway.catalogue.target import Target
from gateway.providers.base import UpstreamConnectionError, UpstreamResponse, UpstreamTimeout

_JSON = "application/json"


class OpenAICompatProvider:
    """Sends chat completions to ``{base_url}/chat/completions`` over a shared pool."""

    def __init__(self, *, pool_size: int = 1024, per_host: int = 0) -> None:
        """``pool_size``: upstream connections open at once, over all hosts (give it the
        process's ``server.max_in_flight``); ``per_host``: per host, 0 = no own limit."""
        self._pool_size = pool_size
        self._per_host = per_host
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, dict[str, str]] = {}
        self._urls: dict[str, URL] = {}

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

    def _url_for(self, target: Target) -> URL:
        """Parsed once per deployment: yarl would parse a string URL on every request."""
        url = self._urls.get(target.id)
        if url is None:
            url = self._urls[target.id] = URL(f"{target.base_url}/chat/completions")
        return url

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
        headers = self._headers_for(target)
        if trace_headers:
            headers = {**headers, **trace_headers}
        return await self._post(
            target,
            self._url_for(target),
            headers,
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
        return await self._post(
            target,
            URL(url),
            sent,
            body,
            stream=stream,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    async def _post(
        self,
        target: Target,
        url: URL,
        headers: Mapping[str, str],
        body: dict[str, Any],
        *,
        stream: bool,
        connect_timeout: float,
        read_timeout: float,
    ) -> UpstreamResponse:
        session = self._get_session()
        if stream:  # no total: a stream lasts as long as it keeps sending
            timeout = aiohttp.ClientTimeout(connect=connect_timeout, sock_read=read_timeout)
        else:
            # ``total`` bounds the pool wait, the connect and the whole answer; a per-read or a
            # pool+connect timer would each add a loop timer per request (armed even when the
            # pooled connection is reused) for nothing more. A new socket still gets
            # ``sock_connect``, which is armed only when one is opened.
            timeout = aiohttp.ClientTimeout(total=read_timeout, sock_connect=connect_timeout)
        try:
            resp = await session.post(
                url, data=orjson.dumps(body), headers=headers, timeout=timeout
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
        except aiohttp.ClientError as exc:
            raise UpstreamConnectionError(f"{target.provider}: {exc!r}") from exc
        if not stream or resp.status >= 300:
            try:
                data = await resp.read()
            except TimeoutError as exc:
                resp.close()
                raise UpstreamTimeout(f"{target.provider} body not complete in time") from exc
            except aiohttp.ClientError as exc:
                resp.close()
                raise UpstreamConnectionError(f"{target.provider}: {exc!r}") from exc
            return UpstreamResponse(resp.status, resp.headers, data)
        return UpstreamResponse(
            resp.status, resp.headers, chunks=_iter_chunks(resp), release=resp.close
        )

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
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _iter_chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for data in resp.content.iter_any():
            yield data
    except TimeoutError as exc:
        raise UpstreamTimeout("stream stalled") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectionError(f"stream broke: {exc!r}") from exc
