"""THE one module that decides what an upstream failure means and what the router does next.

A failure is first *classified* into one :class:`FailureClass`, then *decided* into one
:class:`Decision`. Nothing else in the gateway reads upstream error bodies, statuses or exception
types. The code tables are data in :mod:`gateway.routing.failure_codes`.

Classification, first match wins::

    HTTP answer   OpenRouter moderation metadata (flagged_input) ......... content_filter
                  GLM business code 500, 1000-1321 ....................... GLM_CODES
                  other hosts' business codes (SiliconFlow 20012, ...) ... HOST_CODES
                  OpenAI code (context_length_exceeded, ...) ............. OPENAI_CODES
                  context phrase ("maximum context length", ...) ......... context
                  error.type (overloaded_error, ...) ..................... ERROR_TYPES
                  HTTP status .... STATUS_CLASSES, else 4xx caller, 5xx transient
    exception     UpstreamTimeout, TimeoutError .......................... timeout
                  UpstreamConnectionError, aiohttp ClientError, OSError .. transient
                  LiteLLM/openai class (a GLM code in the text wins) ..... EXCEPTION_NAMES
                  anything else .......................................... transient
    stream event  an error object in a 200 stream (OpenAI, OpenRouter, vLLM) . as an HTTP answer
                  finish_reason network_error, error -> transient; sensitive -> content_filter
    gateway       a json_schema answer that does not validate ............ schema_mismatch

Decision (``DECISION_TABLE``; the cooldown opens the deployment's circuit for that long)::

    class           action                        cooldown                    flags
    caller          FAIL: 400 to the client       -                           -
    content_filter  FAIL: 400, never fall back    -                           -
    context         NEXT                          -                           larger_context_only
    rate_limit      NEXT                          Retry-After, else 1 s       -
    quota           NEXT                          until the reset, else 1 h   -
    overloaded      NEXT                          Retry-After, else 5 s       -
    auth            NEXT                          300 s                       mark_key_bad
    transient       RETRY while attempt_on_target <= transient_retries, then NEXT
    timeout         NEXT                          - (the breaker counts)      -
    model_gone      NEXT                          600 s                       -
    schema_mismatch NEXT (once: gateway.routing.structured)  -                -

Falling back after a content filter could be read as evading moderation, so it FAILs. When every
attempt failed with a class in ``CAPACITY_CLASSES`` the gateway answers 503, otherwise 502.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypeVar

import orjson

from gateway.providers.base import UpstreamConnectionError, UpstreamTimeout
from gateway.routing import failure_codes as codes


class FailureClass(StrEnum):
    CALLER = "caller"
    """The request itself is wrong (bad field); every host would say the same."""
    CONTEXT = "context"
    """The prompt does not fit this deployment's window."""
    CONTENT_FILTER = "content_filter"
    RATE_LIMIT = "rate_limit"
    """This key is throttled at this host (concurrency, frequency)."""
    QUOTA = "quota"
    """A usage/daily limit that resets at a known time (GLM 1304, 1308, plan limits)."""
    OVERLOADED = "overloaded"
    """The host is busy for everyone (GLM 1305, 1312, HTTP 503/529)."""
    AUTH = "auth"
    """Our key is bad, expired, or the account has no balance."""
    TRANSIENT = "transient"
    """5xx, reset connection, network error inside a stream."""
    TIMEOUT = "timeout"
    MODEL_GONE = "model_gone"
    """The host does not (or no longer) serve this model id."""
    SCHEMA = "schema_mismatch"
    """A 200 answer to a ``json_schema`` request that is not JSON valid against the schema."""


class Action(StrEnum):
    RETRY = "retry"
    """Try the same deployment once more (after backoff / Retry-After)."""
    NEXT = "next"
    """Move to the next candidate."""
    FAIL = "fail"
    """Stop and return this failure to the client."""


@dataclass(frozen=True, slots=True)
class Failure:
    cls: FailureClass
    status: int
    """Upstream HTTP status; 0 when there was no answer."""
    code: str | None
    message: str
    retry_after: float | None = None
    """Seconds, from the Retry-After header or the body (for quotas: until ``reset_at``)."""
    reset_at: float | None = None
    """Epoch seconds at which a quota resets (from GLM 1304/1308 messages)."""
    note: str = ""
    """What the gateway makes of it ("account in arrears (no balance)"): for logs and headers."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    cooldown_s: float | None = None
    """Open the deployment's circuit for this long (None: leave it to the breaker's count)."""
    mark_key_bad: bool = False
    larger_context_only: bool = False
    """Only candidates with a larger window than the failed one may follow."""


@dataclass(frozen=True, slots=True)
class DecisionRule:
    """One row of :data:`DECISION_TABLE`."""

    action: Action
    cooldown_s: float | None = None
    """Default cooldown; None leaves the deployment to the breaker's failure count."""
    honour_retry_after: bool = False
    """Use the failure's ``retry_after`` instead of the default when there is one."""
    retry_first: bool = False
    """RETRY the same target while ``attempt_on_target <= transient_retries``, then ``action``."""
    mark_key_bad: bool = False
    larger_context_only: bool = False


DECISION_TABLE: Final[Mapping[FailureClass, DecisionRule]] = MappingProxyType(
    {
        FailureClass.CALLER: DecisionRule(Action.FAIL),
        FailureClass.CONTENT_FILTER: DecisionRule(Action.FAIL),
        FailureClass.CONTEXT: DecisionRule(Action.NEXT, larger_context_only=True),
        FailureClass.RATE_LIMIT: DecisionRule(Action.NEXT, 1.0, honour_retry_after=True),
        FailureClass.QUOTA: DecisionRule(Action.NEXT, 3600.0, honour_retry_after=True),
        FailureClass.OVERLOADED: DecisionRule(Action.NEXT, 5.0, honour_retry_after=True),
        FailureClass.AUTH: DecisionRule(Action.NEXT, 300.0, mark_key_bad=True),
        FailureClass.TRANSIENT: DecisionRule(Action.NEXT, retry_first=True),
        FailureClass.TIMEOUT: DecisionRule(Action.NEXT),
        FailureClass.MODEL_GONE: DecisionRule(Action.NEXT, 600.0),
        FailureClass.SCHEMA: DecisionRule(Action.NEXT),
    }
)

CAPACITY_CLASSES: Final = frozenset(
    {FailureClass.RATE_LIMIT, FailureClass.QUOTA, FailureClass.OVERLOADED}
)
"""If every attempt failed with one of these, the gateway answers 503 instead of 502."""

_K = TypeVar("_K")


def _typed(table: Mapping[_K, tuple[str, str]]) -> Mapping[_K, tuple[FailureClass, str]]:
    return MappingProxyType({k: (FailureClass(c), note) for k, (c, note) in table.items()})


GLM_CODES: Final = _typed(codes.GLM_CODES)
"""GLM business code -> (class, note)."""
HOST_CODES: Final = _typed(codes.HOST_CODES)
_OPENAI_CODES: Final = _typed(codes.OPENAI_CODES)
_ERROR_TYPES: Final = _typed(codes.ERROR_TYPES)
_STATUS: Final = _typed(codes.STATUS_CLASSES)
_EXCEPTIONS: Final = MappingProxyType(
    {name: FailureClass(c) for name, c in codes.EXCEPTION_NAMES.items()}
)
_FINISH: Final = MappingProxyType(
    {
        "network_error": (FailureClass.TRANSIENT, "inference failed mid-stream (network_error)"),
        "sensitive": (FailureClass.CONTENT_FILTER, "moderation stopped the output (sensitive)"),
        "error": (FailureClass.TRANSIENT, "the host ended the stream with an error (OpenRouter)"),
    }
)
_CLIENT_ERRORS: Final = MappingProxyType(
    {
        FailureClass.CONTEXT: (400, "invalid_request_error", "context_length_exceeded"),
        FailureClass.CONTENT_FILTER: (400, "invalid_request_error", "content_policy_violation"),
    }
)

_GLM_CODE_IN_TEXT: Final = re.compile(r"""['"]code['"]\s*:\s*['"]?(\d{4})\b""")
_OPENAI_CODE: Final = re.compile(r"[a-z][a-z0-9_]{2,63}")


# --- HTTP answers ---------------------------------------------------------------------------


def classify_response(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Failure:
    """Classify an upstream error answer. Never raises, whatever the body holds.

    ``now`` (epoch seconds) is for tests; HTTP-date Retry-After and quota resets need a clock.
    """
    now = time.time() if now is None else now
    parsed = codes.parse_error_body(body)
    effective = _effective_status(status, parsed.code)
    cls, note = _classify(effective, parsed)
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = codes.retry_after_s(lowered, now, limited=effective == 429)
    reset_at = codes.stated_reset(parsed.message) if cls is FailureClass.QUOTA else None
    if reset_at is None and parsed.code == "1304":
        reset_at = codes.next_midnight_glm(now)
    if reset_at is not None:
        retry_after = max(reset_at - now, 1.0)
    message = parsed.message[: codes.MAX_MESSAGE] or note
    return Failure(cls, status, parsed.code, message, retry_after, reset_at, note)


def _classify(status: int, parsed: codes.ErrorBody) -> tuple[FailureClass, str]:
    if parsed.flagged:
        return FailureClass.CONTENT_FILTER, "input flagged by the host's moderation"
    if parsed.code is not None:
        hit = (
            GLM_CODES.get(parsed.code)
            or HOST_CODES.get(parsed.code)
            or _OPENAI_CODES.get(parsed.code)
        )
        if hit is not None:
            return hit
    text = f"{parsed.message}\n{parsed.detail}".lower()
    if _says_context(text) or (status == 413 and ("token" in text or "context" in text)):
        return FailureClass.CONTEXT, "prompt does not fit the context window"
    if parsed.type is not None and (hit := _ERROR_TYPES.get(parsed.type)) is not None:
        return hit
    if (hit := _STATUS.get(status)) is not None:
        return hit
    if 400 <= status < 500:
        return FailureClass.CALLER, f"upstream rejected the request (HTTP {status})"
    return FailureClass.TRANSIENT, f"upstream error (HTTP {status})"


def _says_context(lowered: str) -> bool:
    return any(all(p in lowered for p in row) for row in codes.CONTEXT_PHRASES)


def _effective_status(status: int, code: str | None) -> int:
    """OpenRouter may put an error in a 200 body; its numeric ``code`` is the real status."""
    if status < 400 and code is not None and code.isdigit() and 400 <= int(code) < 600:
        return int(code)
    return status


# --- exceptions and stream endings ----------------------------------------------------------


def classify_exception(exc: BaseException, *, now: float | None = None) -> Failure:
    """Classify an exception raised instead of an answer (provider seam, aiohttp, LiteLLM)."""
    message = f"{type(exc).__name__}: {exc}"[: codes.MAX_MESSAGE]
    if isinstance(exc, UpstreamTimeout | TimeoutError):
        return Failure(FailureClass.TIMEOUT, 0, None, message, note="no answer in time")
    if isinstance(exc, UpstreamConnectionError) or _is_aiohttp_error(exc):
        return Failure(FailureClass.TRANSIENT, 0, None, message, note="connection failed")
    named = next(
        (_EXCEPTIONS[c.__name__] for c in type(exc).__mro__ if c.__name__ in _EXCEPTIONS), None
    )
    raw_status = getattr(exc, "status_code", None)
    status = raw_status if isinstance(raw_status, int) and not isinstance(raw_status, bool) else 0
    if named is None and status == 0:
        note = "connection failed" if isinstance(exc, OSError) else "unexpected error"
        return Failure(FailureClass.TRANSIENT, 0, None, message, note=note)
    text = str(exc)
    found = _GLM_CODE_IN_TEXT.search(text)
    code = found[1] if found and found[1] in GLM_CODES else None
    if code is not None:
        cls, note = GLM_CODES[code]
    elif named is not None and not (named is FailureClass.CALLER and _says_context(text.lower())):
        cls, note = named, f"{type(exc).__name__} from the upstream library"
    else:
        cls, note = _classify(status, codes.ErrorBody(message=text))
    headers = _exception_headers(exc)
    now = time.time() if now is None else now
    retry_after = codes.retry_after_s(headers, now, limited=status == 429)
    return Failure(cls, status, code, message, retry_after=retry_after, note=note)


def _is_aiohttp_error(exc: BaseException) -> bool:
    """aiohttp.ClientError, recognised without importing aiohttp (the provider owns it)."""
    return any(
        c.__name__ == "ClientError" and c.__module__.startswith("aiohttp")
        for c in type(exc).__mro__
    )


def _exception_headers(exc: BaseException) -> dict[str, str]:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not isinstance(headers, Mapping):
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def classify_finish_reason(finish_reason: str) -> Failure | None:
    """A stream that *ended* with a failure (GLM sends no error code mid-stream)."""
    hit = _FINISH.get(finish_reason)
    if hit is None:
        return None
    cls, note = hit
    return Failure(cls, 200, finish_reason, note, note=note)


def classify_stream_event(obj: object) -> Failure | None:
    """The failure one parsed event of a 200 stream carries, or None for an ordinary chunk.

    An error object (``{"error": {...}}`` from OpenAI and vLLM, OpenRouter's chunk with
    ``error`` and ``finish_reason: "error"``, vLLM's bare ``{"object": "error", ...}``) is
    classified as an HTTP answer would be (its numeric ``code`` standing in for the status);
    otherwise a failing ``finish_reason`` (``network_error``, ``sensitive``, ``error``).
    """
    if not isinstance(obj, dict):
        return None
    if obj.get("error") is not None or obj.get("object") == "error":
        return classify_response(200, {}, orjson.dumps(obj))
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    fr = choices[0].get("finish_reason")
    return classify_finish_reason(fr) if isinstance(fr, str) else None


def stream_failure(obj: object) -> Failure | None:
    """The failure that must stop relaying a stream at this event, or None.

    A ``sensitive`` finish is not one: it is relayed as OpenAI's ``content_filter`` ending. An
    error object always is, whatever its class (moderation included).
    """
    failure = classify_stream_event(obj)
    if failure is None or (
        failure.cls is FailureClass.CONTENT_FILTER
        and failure.status == 200
        and failure.code == "sensitive"
    ):
        return None
    return failure


def redacted(failure: Failure, redact: Callable[[str], str]) -> Failure:
    """``failure`` with its upstream text (``message`` and ``code``) passed through ``redact``.

    The router applies it to every failure it records, so what is built from attempts (error
    bodies, ``X-GLM-Fallback-Reason``, the access log) never carries a key a host echoed.
    """
    message = redact(failure.message)
    code = redact(failure.code) if failure.code else failure.code
    if message == failure.message and code == failure.code:
        return failure
    return replace(failure, message=message, code=code)


# --- decisions ------------------------------------------------------------------------------


def decide(failure: Failure, *, attempt_on_target: int, transient_retries: int) -> Decision:
    """What the router does next; ``attempt_on_target`` counts attempts made there (1-based)."""
    rule = DECISION_TABLE[failure.cls]
    if rule.retry_first and attempt_on_target <= transient_retries:
        return Decision(Action.RETRY)
    cooldown = rule.cooldown_s
    if rule.honour_retry_after and failure.retry_after is not None:
        cooldown = failure.retry_after
    return Decision(
        rule.action,
        cooldown_s=cooldown,
        mark_key_bad=rule.mark_key_bad,
        larger_context_only=rule.larger_context_only,
    )


def account_wide(failure: Failure) -> bool:
    """A quota with a stated reset (GLM 1304/1308/1310, a Coding Plan's 5-hour or weekly
    window): the whole key on that surface is spent until then, every model on it, so every
    deployment there opens its circuit until the reset, not only the one that answered."""
    return failure.cls is FailureClass.QUOTA and failure.reset_at is not None


def client_error_for(failure: Failure) -> tuple[int, str, str]:
    """(status, type, code) for the client when the decision is FAIL.

    CALLER keeps the upstream code when it is an OpenAI-style word, else
    ``upstream_rejected_request``. Classes that never FAIL by default map to 503 (capacity)
    or 502 with code ``upstream_<class>``.
    """
    fixed = _CLIENT_ERRORS.get(failure.cls)
    if fixed is not None:
        return fixed
    if failure.cls is FailureClass.CALLER:
        code = failure.code
        if code is None or not _OPENAI_CODE.fullmatch(code):
            code = "upstream_rejected_request"
        return 400, "invalid_request_error", code
    status = 503 if failure.cls in CAPACITY_CLASSES else 502
    return status, "upstream_error", f"upstream_{failure.cls.value}"
