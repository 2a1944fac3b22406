"""What upstream error answers say: the code tables, and readers for body shapes and wait times.

No decisions here: :mod:`gateway.routing.failures` classifies and decides. Classes in the tables
are the string values of :class:`gateway.routing.failures.FailureClass` (this module cannot import
it without a cycle); ``failures`` converts them once at import, so a typo fails at import.
Sources: docs.z.ai/api-reference/api-code and the research note
(``glm-providers.md`` §3), LiteLLM 1.110.2
(``llms/bigmodel/responses/transformation.py``, ``litellm_core_utils/exception_mapping_utils.py``),
openrouter.ai/docs/errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any, Final

import orjson

_PLAN_LIMIT: Final = "plan usage or fair-use limit (HTTP 429 in LiteLLM's BigModel map)"

GLM_CODES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "500": ("transient", "internal error"),
        "1000": ("auth", "authentication failed"),
        "1001": ("auth", "no authentication parameter in the header"),
        "1002": ("auth", "invalid authentication token"),
        "1003": ("auth", "authentication token expired"),
        "1004": ("auth", "authentication failed with the provided token"),
        "1005": ("auth", "authentication failed (401 in LiteLLM's BigModel map)"),
        "1100": ("auth", "account read/write error"),
        "1110": ("auth", "account inactive"),
        "1111": ("auth", "account does not exist"),
        "1112": ("auth", "account locked"),
        # HTTP 429 "Insufficient balance or no resource package": no balance on this surface.
        # A Coding Plan key sent to the general endpoint gets it (the plan is only served at
        # /api/coding/paas/v4): auth marks this key bad on this surface only (Target.account),
        # so the request moves on to the key's other surfaces.
        "1113": ("auth", "no balance or resource package on this surface (wrong surface?)"),
        "1120": ("transient", "cannot access the account right now, try later"),
        "1121": ("auth", "account locked for irregular activity"),
        "1200": ("caller", "API call error"),
        "1210": ("caller", "incorrect API call parameters"),
        "1211": ("model_gone", "model does not exist (mapping bug or retired id)"),
        "1212": ("model_gone", "model does not support this call method"),
        "1213": ("caller", "a parameter was not received properly"),
        "1214": ("caller", "invalid parameter"),
        "1215": ("caller", "two parameters cannot be set together"),
        # Per API, not per key: marking the key bad would take the host out for every model.
        "1220": ("model_gone", "our key has no permission for this API/model"),
        "1221": ("model_gone", "API taken offline (mapping is stale)"),
        "1222": ("model_gone", "API does not exist (mapping is stale)"),
        "1230": ("transient", "API call process error"),
        "1231": ("transient", "duplicate request_id: retry with a new one"),
        "1234": ("transient", "upstream network error"),
        "1261": ("context", "prompt exceeds max length"),
        "1300": ("content_filter", "API call blocked by policy"),
        "1301": ("content_filter", "unsafe or sensitive content in input or output"),
        "1302": ("rate_limit", "too much concurrency on this key"),
        "1303": ("rate_limit", "request frequency too high on this key"),
        "1304": ("quota", "daily call limit reached: resets at midnight UTC+8"),
        "1305": ("overloaded", "platform-wide rate limit: service temporarily overloaded"),
        "1308": ("quota", "usage limit reached: resets at the time in the message"),
        "1309": ("auth", "GLM Coding Plan expired"),
        "1310": ("quota", "weekly/monthly limit exhausted: resets at the time in the message"),
        "1311": ("model_gone", "our plan does not include this model"),
        "1312": ("overloaded", "this model is too busy right now"),
        "1313": ("quota", "coding-plan fair-use restriction"),
        "1314": ("quota", _PLAN_LIMIT),
        "1315": ("quota", _PLAN_LIMIT),
        "1316": ("quota", "5-hour usage limit reached, no balance for extra usage"),
        "1317": ("quota", "7-day usage limit reached, no balance for extra usage"),
        "1318": ("quota", _PLAN_LIMIT),
        "1319": ("quota", _PLAN_LIMIT),
        "1320": ("quota", _PLAN_LIMIT),
        "1321": ("quota", _PLAN_LIMIT),
    }
)
"""Zhipu BigModel / Z.ai business codes (``error.code``, a string or an int on the wire)."""

HOST_CODES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        # SiliconFlow answers ``{"code": <int>, "message", "data": null}`` (no ``error`` wrapper).
        "20012": ("model_gone", "SiliconFlow: model does not exist (mapping is stale)"),
        "30011": ("auth", "SiliconFlow: paid balance insufficient for this model"),
        "50508": ("overloaded", "SiliconFlow: system too busy"),
    }
)
"""Other hosts' numeric business codes (disjoint from GLM's 500 and 1000-1321). SiliconFlow's
generic 20015 ("Value error, ...") is left out on purpose: it covers unsupported parameters and
may cover a too-long prompt, so the context phrases and then the HTTP status decide."""

OPENAI_CODES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "context_length_exceeded": ("context", "context length exceeded"),
        "rate_limit_exceeded": ("rate_limit", "rate limit exceeded"),
        "insufficient_quota": ("auth", "no balance or billing quota left on our key"),
        "billing_hard_limit_reached": ("auth", "billing hard limit reached on our key"),
        "invalid_api_key": ("auth", "invalid API key"),
        "account_deactivated": ("auth", "account deactivated"),
        "model_not_found": ("model_gone", "model not found"),
        "content_policy_violation": ("content_filter", "content policy violation"),
        "content_filter": ("content_filter", "blocked by the content filter"),
        "server_is_overloaded": ("overloaded", "upstream servers overloaded"),
    }
)
"""OpenAI-style ``error.code`` strings (also Together, Fireworks, DeepInfra, Novita)."""

ERROR_TYPES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "insufficient_quota": ("auth", "no balance or billing quota left on our key"),
        "authentication_error": ("auth", "authentication error"),
        "rate_limit_error": ("rate_limit", "rate limited"),
        "overloaded_error": ("overloaded", "upstream overloaded"),
        # Anthropic's error types (hosts that speak Messages natively)
        "billing_error": ("auth", "no balance or billing quota left on our key"),
        "permission_error": ("auth", "our key may not use this"),
        "not_found_error": ("model_gone", "the host does not serve this model id"),
        "timeout_error": ("timeout", "the host timed out"),
    }
)
"""``error.type`` values that say more than the HTTP status (after codes and phrases). Generic
types such as ``server_error`` are left out: OpenAI sends them with 503 too."""

CONTEXT_PHRASES: Final[tuple[tuple[str, ...], ...]] = (
    ("maximum context length",),  # OpenAI, vLLM, DeepSeek, Fireworks
    ("context_length_exceeded",),
    ("context length exceeded",),
    ("longer than the model's context length",),  # SGLang
    ("longer than the maximum model length",),  # vLLM decoder prompt
    ("prompt exceeds max length",),  # GLM 1261 text
    ("prompt is too long",),  # Fireworks, Anthropic
    ("input is too long",),
    ("`inputs` tokens + `max_new_tokens` must be",),  # TGI / Together
    ("exceeds the available context size",),  # llama.cpp
    ("exceed context limit",),
    ("maximum context limit",),
    ("input tokens exceed the configured limit",),
    ("requested token count exceeds",),
    ("exceed", "context window"),
    ("current length is", "while limit is"),  # Cerebras
    ("maximum input length", "tokens"),
)
"""Lower-case substrings (all of a row must occur) that mark a context-window error."""

EXCEPTION_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ContextWindowExceededError": "context",
        "ContentPolicyViolationError": "content_filter",
        "RateLimitError": "rate_limit",
        "PaymentRequiredError": "auth",
        "AuthenticationError": "auth",
        "PermissionDeniedError": "auth",
        "NotFoundError": "model_gone",
        "EndpointNotSupportedByModelError": "model_gone",
        "LiteLLMUnknownProvider": "model_gone",
        "BadRequestError": "caller",
        "UnprocessableEntityError": "caller",
        "Timeout": "timeout",
        "APITimeoutError": "timeout",
        "MidStreamFallbackError": "transient",
        "ServiceUnavailableError": "overloaded",
        "BadGatewayError": "transient",
        "InternalServerError": "transient",
        "APIConnectionError": "transient",
        "APIResponseValidationError": "transient",
    }
)
"""LiteLLM / openai-SDK exception class names (matched along the MRO, most specific first)."""

STATUS_CLASSES: Final[Mapping[int, tuple[str, str]]] = MappingProxyType(
    {
        400: ("caller", "upstream rejected the request"),
        401: ("auth", "upstream rejected our key"),
        402: ("auth", "no balance or credits left on our key"),
        403: ("auth", "upstream refused our key"),
        404: ("model_gone", "model or endpoint not found"),
        405: ("model_gone", "endpoint does not accept this method (base URL?)"),
        408: ("timeout", "upstream timed out"),
        410: ("model_gone", "model or endpoint gone"),
        413: ("caller", "request too large"),
        422: ("caller", "upstream could not process the request"),
        429: ("rate_limit", "rate limited"),
        434: ("auth", "no permission for this API (GLM beta API)"),
        503: ("overloaded", "upstream unavailable"),
        504: ("timeout", "upstream gateway timeout"),
        524: ("timeout", "upstream timed out behind Cloudflare"),
        529: ("overloaded", "upstream overloaded"),
    }
)
"""HTTP status fallbacks when no code, phrase or type decided. Other 4xx: caller; 5xx: transient."""


# --- readers --------------------------------------------------------------------------------

MAX_MESSAGE: Final = 500
GLM_TZ: Final = timezone(timedelta(hours=8))
"""Zhipu states reset times in Beijing time, without an offset."""
_RESET_TIME: Final = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(Z|[+-]\d{2}:?\d{2})?")
_DURATION: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S: Final = MappingProxyType({"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0})
_HTML_TITLE: Final = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_RESET_HEADERS: Final = (
    ("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests"),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
    ("x-ratelimit-reset", "x-ratelimit-remaining"),
)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an error body says, whatever the host's shape."""

    code: str | None = None
    """``error.code`` (or top-level ``code``) as a string: "1261", "429", "rate_limit_exceeded"."""
    type: str | None = None
    message: str = ""
    detail: str = ""
    """Nested upstream text (OpenRouter ``metadata.raw``): for phrases, never for codes."""
    flagged: bool = False
    """OpenRouter moderation: ``metadata`` carries ``flagged_input`` / ``reasons``."""


def parse_error_body(body: bytes) -> ErrorBody:
    """Read Zhipu, OpenAI, OpenRouter, vLLM, TGI, plain-text and HTML error bodies. Never raises.

    Shapes: ``{"error": {"code", "message", "type", "metadata"}}`` (a numeric ``type`` is a GLM
    code: Z.ai's Anthropic endpoint), top-level
    ``{"code", "message"|"msg", "type"}`` (vLLM, Zhipu), ``{"error": "text", "error_type"}`` (TGI).
    """
    try:
        doc: Any = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return ErrorBody(message=_plain_text(body))
    if isinstance(doc, list) and doc:
        doc = doc[0]
    if isinstance(doc, str):
        return ErrorBody(message=doc)
    if not isinstance(doc, dict):
        return ErrorBody(message=_plain_text(body))
    err = doc.get("error")
    src: dict[str, Any] = err if isinstance(err, dict) else doc
    meta = src.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    kind = src.get("type")
    return ErrorBody(
        # Z.ai's Anthropic endpoint: {"type": "error", "error": {"type": "1308", ...}}
        code=_code(src.get("code")) or (kind if isinstance(kind, str) and kind.isdigit() else None),
        type=_text(src.get("type")) or _text(doc.get("error_type")) or None,
        message=_text(src.get("message")) or _text(src.get("msg")) or _text(err),
        detail=_text(meta.get("raw")),
        flagged="flagged_input" in meta or "reasons" in meta,
    )


def _code(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return ""


def _plain_text(body: bytes) -> str:
    """A proxy's plain-text or HTML page: its <title>, or its first words."""
    text = body[:4096].decode("utf-8", "replace")
    title = _HTML_TITLE.search(text)
    return " ".join((title[1] if title else text).split())[:MAX_MESSAGE]


def retry_after_s(h: Mapping[str, str], now: float, *, limited: bool) -> float | None:
    """Seconds to wait, from lower-cased headers: ``retry-after-ms``, ``Retry-After`` (seconds or
    HTTP date), or, when ``limited`` (a 429), the ``x-ratelimit-reset*`` of an exhausted limit."""
    ms = _number(h.get("retry-after-ms"))
    if ms is not None:
        return max(ms / 1000.0, 0.0)
    value = h.get("retry-after")
    if value is not None:
        seconds = _number(value)
        return max(seconds, 0.0) if seconds is not None else _http_date_wait(value, now)
    if not limited:
        return None
    waits = [
        wait
        for reset, remaining in _RESET_HEADERS
        if reset in h
        and h.get(remaining, "0").strip() == "0"
        and (wait := _reset_wait(h[reset], now)) is not None
    ]
    return max(waits, default=None)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _http_date_wait(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)


def _reset_wait(value: str, now: float) -> float | None:
    """``x-ratelimit-reset*``: seconds, epoch (s or ms), or a duration such as ``6m0s``."""
    number = _number(value)
    if number is not None:
        if number > 1e12:
            number = number / 1000.0 - now
        elif number > 1e9:
            number -= now
        return max(number, 0.0)
    value = value.strip()
    if not _DURATION.fullmatch(value):
        return None
    return sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(value))


def next_midnight_glm(now: float) -> float:
    """Epoch seconds of the next 00:00 in UTC+8 (GLM 1304: the daily limit resets then)."""
    tomorrow = datetime.fromtimestamp(now, GLM_TZ).date() + timedelta(days=1)
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=GLM_TZ).timestamp()


def stated_reset(message: str) -> float | None:
    """Epoch seconds of a ``YYYY-MM-DD HH:MM:SS`` in the message, read as UTC+8 unless it has an
    offset ("Your limit will reset at 2026-11-29 10:00:00", "将在 2026-11-29 10:00:00 重置")."""
    found = _RESET_TIME.search(message)
    if found is None:
        return None
    try:
        when = datetime.fromisoformat(f"{found[1]}T{found[2]}{found[3] or '+08:00'}")
    except ValueError:
        return None
    return when.timestamp()
