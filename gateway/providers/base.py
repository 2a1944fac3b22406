"""The Provider seam: how the router talks to an upstream host.

Two implementations: :mod:`gateway.providers.openai_compat` (every OpenAI-compatible host, over
the keep-alive pool of :mod:`gateway.providers.http1`) and
:mod:`gateway.providers.litellm_adapter` (hosts that are not OpenAI-compatible).
A provider never raises for an upstream *answer*: an error status comes back as an
:class:`UpstreamResponse` with its status and body, for :mod:`gateway.routing.failures` to
classify. It raises :class:`UpstreamConnectionError` / :class:`UpstreamTimeout` when there is
no answer at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.catalogue.target import Target


class UpstreamConnectionError(Exception):
    """No HTTP answer: connection refused or reset, DNS, TLS."""


class UpstreamTimeout(Exception):
    """The upstream did not answer (or did not send the next bytes) in time."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    """The whole body for non-streaming answers and for every error answer."""
    chunks: AsyncIterator[bytes] | None = None
    """For a 2xx streaming answer: raw SSE bytes as they arrive (any framing)."""
    release: Any = field(default=None, repr=False)
    """Callable that frees the connection; call :meth:`close` rather than this."""

    async def close(self) -> None:
        chunks = self.chunks
        if chunks is not None:
            # An async generator left suspended would be finalized by the event loop's hook
            # (call_soon_threadsafe: a self-pipe write and an extra task per stream).
            self.chunks = None
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                # Not contextlib.suppress: its object and three Python calls cost ~3,000
                # instructions per stream.
                try:  # noqa: SIM105
                    await aclose()
                except RuntimeError:  # already running: it ends by itself
                    pass
        if self.release is not None:
            rel, self.release = self.release, None
            res = rel()
            if hasattr(res, "__await__"):
                await res


class Provider(Protocol):
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
        """Send one chat-completions request to ``target``.

        ``body`` is already adapted for the target (model id set). ``read_timeout`` bounds the
        wait for the response head (non-stream: the whole body). ``trace_headers``: the
        attempt's W3C trace context (``traceparent``), sent along when traces are on. Raises
        UpstreamConnectionError or UpstreamTimeout when there is no answer.
        """
        ...

    async def aclose(self) -> None: ...


class NativeSender(Protocol):
    """A provider that can also post a client's own API body to a host's native endpoint."""

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
    ) -> UpstreamResponse: ...
