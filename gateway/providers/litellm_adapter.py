"""The LiteLLM adapter, for hosts that are not OpenAI-compatible (Bedrock, Vertex ...).

The only module that imports ``litellm``, and only on first use, so a gateway with no LiteLLM
deployment never pays its import time or memory. LiteLLM's own retries are off: fallback is
the router's job. Answers are turned back into raw OpenAI bytes so the router treats both
adapters alike; LiteLLM exceptions become UpstreamResponse errors for the failure table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from gateway.catalogue.target import Target
from gateway.providers.base import UpstreamConnectionError, UpstreamResponse, UpstreamTimeout

_NOT_FORWARDED = frozenset({"model", "messages", "stream", "metadata"})
"""Passed by name below, or read by LiteLLM itself (``metadata`` feeds its callbacks)."""
_CONNECTION_KWARGS = frozenset(
    {"api_base", "base_url", "api_key", "api_version", "extra_headers", "headers"}
)
"""LiteLLM options that pick where a call goes and with which credentials: only the
deployment's config may set them (the body reaching here is already allowlisted by
``dialects.fields``; this is the second line)."""


class LiteLLMProvider:
    def __init__(self) -> None:
        self._litellm: Any = None

    def _lib(self) -> Any:
        if self._litellm is None:
            import litellm

            litellm.suppress_debug_info = True
            litellm.drop_params = True
            self._litellm = litellm
        return self._litellm

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
        lib = self._lib()
        if _has_remote_image(body.get("messages")):
            # LiteLLM downloads image URLs itself for hosts that take only inline images (Bedrock
            # Converse): the gateway would fetch a URL a client chose. Such a request goes to a
            # host that fetches images itself.
            raise UpstreamConnectionError(
                f"{target.provider}: this LiteLLM deployment takes inline (data:) images only"
            )
        kwargs = {
            k: v for k, v in body.items() if k not in _NOT_FORWARDED and k not in _CONNECTION_KWARGS
        }
        kwargs.update(dict(target.litellm_params))
        if target.base_url:
            kwargs["api_base"] = target.base_url
        if target.api_key:
            kwargs["api_key"] = target.api_key
        if trace_headers:
            kwargs["extra_headers"] = dict(trace_headers)
        try:
            result = await lib.acompletion(
                model=target.litellm_model or target.model,
                messages=body["messages"],
                stream=stream,
                num_retries=0,
                max_retries=0,
                timeout=read_timeout,
                **kwargs,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{target.provider}: no answer in {read_timeout:g}s") from exc
        except Exception as exc:  # LiteLLM maps every host error to its own classes
            return _error_response(exc, target)
        if not stream:
            return UpstreamResponse(200, {}, orjson.dumps(result.model_dump(exclude_none=True)))
        return UpstreamResponse(200, {}, chunks=_sse(result, target), release=None)

    async def aclose(self) -> None:
        return None


def _has_remote_image(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            img = part.get("image_url") if isinstance(part, dict) else None
            url = img.get("url") if isinstance(img, dict) else img
            if isinstance(url, str) and not url.startswith("data:"):
                return True
    return False


def _chain_names(exc: BaseException) -> set[str]:
    """Class names (with bases) of ``exc`` and what caused it: LiteLLM reports a refused
    connection as InternalServerError (500) wrapping openai.APIConnectionError."""
    names: set[str] = set()
    cur: BaseException | None = exc
    for _ in range(8):
        if cur is None:
            break
        names.update(c.__name__ for c in type(cur).__mro__)
        cur = cur.__cause__ or cur.__context__
    return names


def _error_response(exc: Exception, target: Target) -> UpstreamResponse:
    name = type(exc).__name__
    chain = _chain_names(exc)
    if name in ("Timeout", "APITimeoutError") or "APITimeoutError" in chain:
        raise UpstreamTimeout(f"{target.provider}: {exc}") from exc
    if name in ("APIConnectionError",) or "APIConnectionError" in chain:
        raise UpstreamConnectionError(f"{target.provider}: {exc}") from exc
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        status = 500
    code = {
        "ContextWindowExceededError": "context_length_exceeded",
        "ContentPolicyViolationError": "content_policy_violation",
        "RateLimitError": "rate_limit_exceeded",
        "AuthenticationError": "invalid_api_key",
        "NotFoundError": "model_not_found",
    }.get(name)
    body = {"error": {"message": str(getattr(exc, "message", exc)), "type": name, "code": code}}
    headers: dict[str, str] = {}
    response = getattr(exc, "response", None)
    retry_after = getattr(getattr(response, "headers", None), "get", lambda _k: None)("retry-after")
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    return UpstreamResponse(status, headers, orjson.dumps(body))


async def _sse(result: Any, target: Target) -> AsyncIterator[bytes]:
    try:
        async for chunk in result:
            obj = chunk.model_dump(exclude_none=True)
            for choice in obj.get("choices") or ():
                if isinstance(choice, dict):  # required (null until the last chunk)
                    choice.setdefault("finish_reason", None)
            yield b"data: " + orjson.dumps(obj) + b"\n\n"
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{target.provider}: stream stalled") from exc
    except Exception as exc:
        raise UpstreamConnectionError(f"{target.provider}: stream broke: {exc}") from exc
    yield b"data: [DONE]\n\n"
