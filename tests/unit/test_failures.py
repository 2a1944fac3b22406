"""gateway.routing.failures: recorded error shapes, the GLM code table, the decision table."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.providers.base import UpstreamConnectionError, UpstreamTimeout
from gateway.routing import failure_codes
from gateway.routing.failures import (
    CAPACITY_CLASSES,
    DECISION_TABLE,
    GLM_CODES,
    Action,
    Failure,
    FailureClass,
    classify_exception,
    classify_finish_reason,
    classify_response,
    classify_stream_event,
    client_error_for,
    decide,
    stream_failure,
)

FIXTURES = sorted((Path(__file__).parents[1] / "data" / "errors").glob("*.json"))
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC).timestamp()
UTC8 = timezone(timedelta(hours=8))

# Every business code in the research note's §3 table (glm-providers.md), hard-coded on purpose:
# the table test fails when failure_codes.GLM_CODES loses one.
RESEARCH_NOTE_GLM_CODES = (
    *(500, 1000, 1001, 1002, 1003, 1004, 1100, 1110, 1111, 1112, 1113, 1120, 1121, 1200),
    *(1210, 1211, 1212, 1213, 1214, 1215, 1220, 1221, 1222, 1230, 1231, 1234, 1261),
    *(1300, 1301, 1302, 1303, 1304, 1305, 1308, 1309, 1310, 1311, 1312),
    *range(1313, 1322),
)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    return orjson.dumps(body)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_classifies_as_recorded(path: Path) -> None:
    fx = _load(path)
    expect = fx["expect"]
    assert fx["source"], "every fixture names where its shape comes from"
    if fx.get("kind") == "finish_reason":
        failure = classify_finish_reason(fx["body"]["choices"][0]["finish_reason"])
        if expect["cls"] is None:
            assert failure is None
            return
    elif fx.get("kind") == "stream_event":
        failure = classify_stream_event(fx["body"])
    else:
        now = fx.get("now", NOW)
        failure = classify_response(fx["status"], fx["headers"], _body_bytes(fx["body"]), now=now)
    assert failure is not None
    assert failure.cls == FailureClass(expect["cls"]), failure
    assert failure.status == fx["status"]
    if "code" in expect:
        assert failure.code == expect["code"]
    for key in ("retry_after", "reset_at"):
        if key in expect:
            assert getattr(failure, key) == pytest.approx(expect[key], abs=0.01), key
    if "message" in expect:
        assert failure.message == expect["message"]
    assert failure.message and failure.note


def test_fixtures_cover_every_research_note_code() -> None:
    recorded = {
        str(fx["body"]["error"]["code"])
        for fx in map(_load, FIXTURES)
        if fx["host"] == "zai" and isinstance(fx["body"], dict) and "error" in fx["body"]
    }
    assert {str(c) for c in RESEARCH_NOTE_GLM_CODES} <= recorded


@pytest.mark.parametrize("code", RESEARCH_NOTE_GLM_CODES)
def test_glm_code_table_maps_every_research_note_code(code: int) -> None:
    assert str(code) in failure_codes.GLM_CODES, f"GLM code {code} has no row"
    cls, note = GLM_CODES[str(code)]
    assert note
    # The code decides, whatever status it comes with (1305 is seen as 429 and as 503).
    for status in (400, 429, 500):
        for raw in (str(code), code):
            body = orjson.dumps({"error": {"code": raw, "message": "x"}})
            assert classify_response(status, {}, body, now=NOW).cls is cls


def test_every_failure_class_has_a_decision_row() -> None:
    assert set(DECISION_TABLE) == set(FailureClass)


def _failure(cls: FailureClass, **kw: Any) -> Failure:
    return Failure(cls, kw.pop("status", 400), kw.pop("code", None), "m", **kw)


@pytest.mark.parametrize(
    ("cls", "action", "cooldown", "key_bad", "larger"),
    [
        (FailureClass.CALLER, Action.FAIL, None, False, False),
        (FailureClass.CONTENT_FILTER, Action.FAIL, None, False, False),
        (FailureClass.CONTEXT, Action.NEXT, None, False, True),
        (FailureClass.RATE_LIMIT, Action.NEXT, 1.0, False, False),
        (FailureClass.QUOTA, Action.NEXT, 3600.0, False, False),
        (FailureClass.OVERLOADED, Action.NEXT, 5.0, False, False),
        (FailureClass.AUTH, Action.NEXT, 300.0, True, False),
        (FailureClass.TIMEOUT, Action.NEXT, None, False, False),
        (FailureClass.MODEL_GONE, Action.NEXT, 600.0, False, False),
    ],
)
def test_decision_per_class(
    cls: FailureClass, action: Action, cooldown: float | None, key_bad: bool, larger: bool
) -> None:
    d = decide(_failure(cls), attempt_on_target=1, transient_retries=1)
    assert (d.action, d.cooldown_s, d.mark_key_bad, d.larger_context_only) == (
        action,
        cooldown,
        key_bad,
        larger,
    )


def test_transient_retries_then_moves_on() -> None:
    f = _failure(FailureClass.TRANSIENT, status=500)
    assert decide(f, attempt_on_target=1, transient_retries=1).action is Action.RETRY
    assert decide(f, attempt_on_target=2, transient_retries=1).action is Action.NEXT
    assert decide(f, attempt_on_target=1, transient_retries=0).action is Action.NEXT


@pytest.mark.parametrize(
    "cls", [FailureClass.RATE_LIMIT, FailureClass.QUOTA, FailureClass.OVERLOADED]
)
def test_capacity_cooldown_follows_retry_after(cls: FailureClass) -> None:
    d = decide(_failure(cls, retry_after=42.0), attempt_on_target=1, transient_retries=1)
    assert d.cooldown_s == 42.0


def test_auth_cooldown_ignores_retry_after() -> None:
    d = decide(
        _failure(FailureClass.AUTH, retry_after=1.0), attempt_on_target=1, transient_retries=1
    )
    assert d.cooldown_s == 300.0


def test_capacity_classes() -> None:
    expected = {FailureClass.RATE_LIMIT, FailureClass.QUOTA, FailureClass.OVERLOADED}
    assert expected == CAPACITY_CLASSES


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (
            _failure(FailureClass.CALLER, code="1214"),
            (400, "invalid_request_error", "upstream_rejected_request"),
        ),
        (
            _failure(FailureClass.CALLER, code="invalid_value"),
            (400, "invalid_request_error", "invalid_value"),
        ),
        (
            _failure(FailureClass.CALLER),
            (400, "invalid_request_error", "upstream_rejected_request"),
        ),
        (
            _failure(FailureClass.CONTENT_FILTER, code="1301"),
            (400, "invalid_request_error", "content_policy_violation"),
        ),
        (
            _failure(FailureClass.CONTEXT, code="1261"),
            (400, "invalid_request_error", "context_length_exceeded"),
        ),
        (_failure(FailureClass.QUOTA), (503, "upstream_error", "upstream_quota")),
        (_failure(FailureClass.TRANSIENT), (502, "upstream_error", "upstream_transient")),
    ],
)
def test_client_error_for(failure: Failure, expected: tuple[int, str, str]) -> None:
    assert client_error_for(failure) == expected


# --- Retry-After and reset times ------------------------------------------------------------


def _rate_limited(headers: dict[str, str], now: float = NOW) -> float | None:
    return classify_response(429, headers, b"", now=now).retry_after


def test_retry_after_seconds() -> None:
    assert _rate_limited({"Retry-After": "17"}) == 17.0
    assert _rate_limited({"retry-after": " 2.5 "}) == 2.5
    assert _rate_limited({"Retry-After": "-3"}) == 0.0


def test_retry_after_http_date() -> None:
    assert _rate_limited({"Retry-After": "Sat, 28 Nov 2026 12:01:00 GMT"}) == pytest.approx(60.0)
    assert _rate_limited({"Retry-After": "Sat, 28 Nov 2026 11:00:00 GMT"}) == 0.0


def test_retry_after_garbage_is_ignored() -> None:
    assert _rate_limited({"Retry-After": "soon"}) is None
    assert _rate_limited({"Retry-After": "nan"}) is None
    assert _rate_limited({}) is None


def test_reset_headers_only_for_an_exhausted_limit_on_429() -> None:
    h = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"}
    assert _rate_limited(h) == 90.0
    assert _rate_limited({**h, "x-ratelimit-remaining-requests": "5"}) is None
    assert classify_response(500, h, b"", now=NOW).retry_after is None
    assert _rate_limited({"x-ratelimit-reset": str(NOW + 12)}) == pytest.approx(12.0)
    assert _rate_limited({"x-ratelimit-reset": "250ms"}) == pytest.approx(0.25)


def _glm(code: str, message: str, now: float = NOW) -> Failure:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return classify_response(429, {}, body, now=now)


def test_1308_reset_time_english_and_chinese() -> None:
    at = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC8).timestamp()
    for message in (
        "Usage limit reached for 5 hour. Your limit will reset at 2026-11-29 10:00:00",
        "已达到 5 小时的使用上限，您的限额将在 2026-11-29 10:00:00 重置",
        "usage limit, reset at 2026-11-29T10:00:00+08:00",
    ):
        f = _glm("1308", message)
        assert (f.cls, f.reset_at) == (FailureClass.QUOTA, at)
        assert f.retry_after == pytest.approx(at - NOW)
    assert _glm("1308", "reset at 2026-11-29 02:00:00Z").reset_at == at


def test_1308_without_a_time_falls_back_to_the_default_cooldown() -> None:
    f = _glm("1308", "Usage limit reached")
    assert (f.reset_at, f.retry_after) == (None, None)
    assert decide(f, attempt_on_target=1, transient_retries=1).cooldown_s == 3600.0


def test_1304_resets_at_next_midnight_utc8() -> None:
    # 2026-11-28 23:30 UTC+8 -> 2026-11-29 00:00 UTC+8; 00:30 -> the following midnight.
    late = datetime(2026, 11, 28, 23, 30, tzinfo=UTC8).timestamp()
    early = datetime(2026, 11, 29, 0, 30, tzinfo=UTC8).timestamp()
    assert (
        _glm("1304", "daily limit", late).reset_at
        == datetime(2026, 11, 29, tzinfo=UTC8).timestamp()
    )
    assert _glm("1304", "daily limit", late).retry_after == pytest.approx(1800.0)
    assert (
        _glm("1304", "daily limit", early).reset_at
        == datetime(2026, 11, 30, tzinfo=UTC8).timestamp()
    )


# --- odd bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"null",
        b"[]",
        b"42",
        b'"text"',
        b"{",
        b"\xff\xfe",
        b'{"error": 7}',
        b'{"error": null}',
    ],
)
def test_odd_bodies_never_raise(body: bytes) -> None:
    assert classify_response(502, {}, body).cls is FailureClass.TRANSIENT
    assert classify_response(400, {}, body).cls is FailureClass.CALLER


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, FailureClass.CALLER),
        (422, FailureClass.CALLER),
        (401, FailureClass.AUTH),
        (402, FailureClass.AUTH),
        (403, FailureClass.AUTH),
        (404, FailureClass.MODEL_GONE),
        (408, FailureClass.TIMEOUT),
        (504, FailureClass.TIMEOUT),
        (413, FailureClass.CALLER),
        (429, FailureClass.RATE_LIMIT),
        (503, FailureClass.OVERLOADED),
        (529, FailureClass.OVERLOADED),
        (500, FailureClass.TRANSIENT),
        (502, FailureClass.TRANSIENT),
        (418, FailureClass.CALLER),
    ],
)
def test_status_fallbacks(status: int, cls: FailureClass) -> None:
    assert classify_response(status, {}, b'{"error": {"message": "no code"}}').cls is cls


def test_413_is_context_when_the_message_says_tokens() -> None:
    body = b'{"error": {"message": "Request has too many tokens for this deployment"}}'
    assert classify_response(413, {}, body).cls is FailureClass.CONTEXT


# --- exceptions and finish reasons ----------------------------------------------------------


def _fake(name: str, status: int | None = None, bases: tuple[type, ...] = (Exception,)) -> type:
    attrs: dict[str, Any] = {} if status is None else {"status_code": status}
    return type(name, bases, attrs)


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (UpstreamTimeout("read timeout"), FailureClass.TIMEOUT),
        (asyncio.TimeoutError(), FailureClass.TIMEOUT),  # noqa: UP041 - the name callers catch
        (TimeoutError(), FailureClass.TIMEOUT),
        (UpstreamConnectionError("refused"), FailureClass.TRANSIENT),
        (ConnectionResetError(), FailureClass.TRANSIENT),
        (OSError("dns"), FailureClass.TRANSIENT),
        (ValueError("bug"), FailureClass.TRANSIENT),
    ],
)
def test_plain_exceptions(exc: BaseException, cls: FailureClass) -> None:
    f = classify_exception(exc)
    assert (f.cls, f.status) == (cls, 0)


def test_aiohttp_errors_are_recognised_without_importing_aiohttp() -> None:
    import aiohttp

    assert classify_exception(aiohttp.ClientPayloadError("cut")).cls is FailureClass.TRANSIENT
    assert classify_exception(aiohttp.ServerTimeoutError()).cls is FailureClass.TIMEOUT


@pytest.mark.parametrize(
    ("name", "status", "cls"),
    [
        ("ContextWindowExceededError", 400, FailureClass.CONTEXT),
        ("ContentPolicyViolationError", 400, FailureClass.CONTENT_FILTER),
        ("RateLimitError", 429, FailureClass.RATE_LIMIT),
        ("AuthenticationError", 401, FailureClass.AUTH),
        ("NotFoundError", 404, FailureClass.MODEL_GONE),
        ("BadRequestError", 400, FailureClass.CALLER),
        ("Timeout", 408, FailureClass.TIMEOUT),
        ("ServiceUnavailableError", 503, FailureClass.OVERLOADED),
        ("APIConnectionError", 500, FailureClass.TRANSIENT),
        ("InternalServerError", 500, FailureClass.TRANSIENT),
        ("APIError", 502, FailureClass.TRANSIENT),
        ("SomeHostError", 404, FailureClass.MODEL_GONE),
    ],
)
def test_library_exceptions_by_name(name: str, status: int, cls: FailureClass) -> None:
    f = classify_exception(_fake(name, status)("upstream said no"))
    assert (f.cls, f.status) == (cls, status)


def test_library_subclass_matches_most_specific_name() -> None:
    bad_request = _fake("BadRequestError", 400)
    context = _fake("ContextWindowExceededError", None, (bad_request,))
    assert classify_exception(context("too long")).cls is FailureClass.CONTEXT


def test_glm_code_in_library_message_wins() -> None:
    rate = _fake("RateLimitError", 429)
    text = 'ZaiException - {"error":{"code":"1113","message":"Your account is in arrears"}}'
    f = classify_exception(rate(text))
    assert (f.cls, f.code) == (FailureClass.AUTH, "1113")


def test_bad_request_with_context_phrase_is_context() -> None:
    exc = _fake("BadRequestError", 400)("This model's maximum context length is 8192 tokens")
    assert classify_exception(exc).cls is FailureClass.CONTEXT


def test_real_litellm_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The names in failure_codes.EXCEPTION_NAMES still match LiteLLM's classes."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map fetch at import
    litellm = pytest.importorskip("litellm")
    cases = [
        (litellm.ContextWindowExceededError("x", "zai/glm-4.6", "zai"), FailureClass.CONTEXT),
        (litellm.RateLimitError("x", "zai", "zai/glm-4.6"), FailureClass.RATE_LIMIT),
        (litellm.Timeout("x", "zai/glm-4.6", "zai"), FailureClass.TIMEOUT),
        (litellm.ServiceUnavailableError("x", "zai", "zai/glm-4.6"), FailureClass.OVERLOADED),
    ]
    for exc, cls in cases:
        assert classify_exception(exc).cls is cls, type(exc).__name__


def test_finish_reasons() -> None:
    net = classify_finish_reason("network_error")
    assert net is not None
    assert (net.cls, net.status, net.code) == (FailureClass.TRANSIENT, 200, "network_error")
    sensitive = classify_finish_reason("sensitive")
    assert sensitive is not None and sensitive.cls is FailureClass.CONTENT_FILTER
    for fr in ("stop", "length", "tool_calls", "content_filter", ""):
        assert classify_finish_reason(fr) is None


def test_host_code_table_maps_every_recorded_business_code() -> None:
    """Numeric business codes recorded from third-party hosts are rows of HOST_CODES, except
    SiliconFlow's generic 20015 ("Value error"), which the phrases and the status decide."""
    recorded = {
        str(fx["body"]["code"])
        for fx in map(_load, FIXTURES)
        if fx["host"] == "siliconflow" and "code" in fx["body"]
    }
    assert recorded - {"20015"} <= set(failure_codes.HOST_CODES)
    assert recorded - set(failure_codes.HOST_CODES) == {"20015"}


def test_errors_inside_200_streams_are_recorded_per_host() -> None:
    hosts = {fx["host"] for fx in map(_load, FIXTURES) if fx.get("kind") == "stream_event"}
    assert {"openai", "openrouter", "vllm"} <= hosts


def test_stream_failure_lets_only_a_sensitive_finish_through() -> None:
    def ending(finish: str | None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}

    assert stream_failure(ending("stop")) is None
    assert stream_failure(ending(None)) is None
    assert stream_failure(ending("sensitive")) is None  # relayed as content_filter
    network = stream_failure(ending("network_error"))
    assert network is not None and network.cls is FailureClass.TRANSIENT
    moderated = stream_failure({"error": {"code": "1301", "message": "unsafe"}})
    assert moderated is not None and moderated.cls is FailureClass.CONTENT_FILTER
    assert stream_failure({"id": "x", "choices": []}) is None
