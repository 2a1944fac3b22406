"""Hypothesis over raw requests to a real gateway (and simulator): any JSON in every chat field,
junk in every header and X-GLM-* value (bytes a client library would refuse included: control
characters, non-latin-1 UTF-8), malformed JSON, invalid UTF-8, bodies at the size cap, nesting
far past any parser's limit, and duplicated headers. Requests go over a raw socket, so every
byte is exactly what the test chose. Every answer must pass :func:`tests.support.fuzz.verdict`
(uvicorn's own 400 for bytes that are not HTTP is allowed) and the gateway may log no traceback.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz import (
    MASTER_KEY,
    VALID_MODELS,
    LogWatch,
    fuzz_gateway,
    fuzz_settings,
    raw_request,
    raw_verdict,
)
from tests.support.procs import Proc

pytestmark = pytest.mark.chaos
AUTH = (b"Authorization", f"Bearer {MASTER_KEY}".encode())
JSON = (b"Content-Type", b"application/json")
CHAT, ROUTE, KEYS = "/v1/chat/completions", "/v1/route", "/admin/keys"
BODY_PATHS = (CHAT, ROUTE, KEYS)
ENDPOINTS = (
    ("POST", CHAT),
    ("POST", ROUTE),
    ("GET", "/v1/models"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/data"),
    ("GET", "/dashboard/app.js"),
    ("GET", "/openapi.json"),
    ("GET", KEYS),
    ("POST", KEYS),
    ("GET", KEYS + "/nokey"),
    ("DELETE", KEYS + "/nokey"),
    ("GET", "/nowhere"),
)
GLM_HEADERS = (
    b"X-GLM-Capabilities",
    b"X-GLM-Min-Context",
    b"X-GLM-Params",
    b"X-GLM-Prefer",
    b"X-GLM-Fallback",
    b"X-GLM-Providers",
    b"X-GLM-Timeout",
)
CHAT_FIELDS = (
    "stream", "stream_options", "tools", "tool_choice", "functions", "response_format",
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "n", "user", "route",
    "logprobs", "seed", "thinking", "parallel_tool_calls", "metadata", "modalities", "audio",
)  # fmt: skip
OK = b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}'
USER = {"role": "user", "content": "hi"}

# --- strategies -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**70),  # past int64: orjson refuses these
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_image", "video_url"]) | json_values},
    optional={"text": json_values, "image_url": json_values, "x": json_values},
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | json_values},
    optional={
        "content": st.text(max_size=20) | st.lists(part | json_values, max_size=3) | json_values,
        "tool_calls": json_values,
        "name": json_values,
        "tool_call_id": json_values,
    },
)
chat_bodies = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(VALID_MODELS) | st.sampled_from(VALID_MODELS) | json_values,
            "messages": st.lists(message, min_size=1, max_size=3)
            | st.lists(message, min_size=1, max_size=3)
            | json_values,
        }
    ),
    st.dictionaries(st.sampled_from(CHAT_FIELDS), json_values, max_size=3),
)
"""A model and messages (mostly well-formed), and up to three other fields holding any JSON."""
header_bytes = st.one_of(
    st.text(max_size=30).map(lambda t: t.encode()),  # UTF-8, non-latin-1 included
    st.binary(max_size=30),  # control characters, invalid UTF-8
    st.sampled_from([b"", b" ", b"150k", b"<=9B", b"vision", b"1e309", b"nan", b"-1", b"0"]),
).filter(lambda v: b"\r" not in v and b"\n" not in v)
header_sets = st.lists(
    st.tuples(
        st.sampled_from([*GLM_HEADERS, b"Authorization", b"X-Request-Id", b"Content-Type"]),
        header_bytes,
    ),
    max_size=6,
)


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with fuzz_gateway(simulator, tmp_path_factory.mktemp("fuzz-raw")) as proc:
        yield proc


@pytest.fixture
def log(gw: Proc) -> Iterator[LogWatch]:
    watch = LogWatch(gw)
    yield watch
    watch.assert_no_traceback()


def _send(gw: Proc, method: str, path: str, headers: Any, body: bytes, log: LogWatch) -> int:
    answer = raw_request(gw.url, method, path, headers, body)
    if answer.status >= 500:
        time.sleep(0.3)  # uvicorn logs an escaped exception after the answer is out
    where = f"{method} {path} headers={headers!r} body={body[:1500]!r}"
    raw_verdict(answer, where)
    log.assert_no_traceback(f" after {where}")
    return answer.status


# --- any JSON in every field ----------------------------------------------------------------


def test_any_json_in_every_chat_field(gw: Proc, log: LogWatch) -> None:
    seen: Counter[str] = Counter()

    @given(body=chat_bodies, path=st.sampled_from([CHAT, ROUTE]))
    @fuzz_settings(100)
    def run(body: dict[str, Any], path: str) -> None:
        seen[f"{path} {_send(gw, 'POST', path, [AUTH, JSON], _dumps(body), log)}"] += 1

    run()
    print(f"\nany JSON: {dict(sorted(seen.items()))}")


def _dumps(value: Any) -> bytes:
    """JSON text as UTF-8 (stdlib json: integers past 64 bits too, which orjson refuses)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


# --- headers --------------------------------------------------------------------------------


def test_junk_in_every_header_on_every_endpoint(gw: Proc, log: LogWatch) -> None:
    seen: Counter[str] = Counter()

    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        junk=header_sets,
        auth=st.sampled_from(["master", "none", "junk-first", "junk-last"]),
    )
    @fuzz_settings(100)
    def run(endpoint: tuple[str, str], junk: list[tuple[bytes, bytes]], auth: str) -> None:
        method, path = endpoint
        headers = list(junk)
        if auth == "master":
            headers = [AUTH, *[h for h in headers if h[0] != b"Authorization"]]
        elif auth == "junk-last":
            headers = [AUTH, *headers]
        elif auth == "junk-first":
            headers = [*headers, AUTH]
        body = (b'{"name":"fuzz"}' if path == KEYS else OK) if method == "POST" else b""
        seen[f"{method} {path} {_send(gw, method, path, headers, body, log)}"] += 1

    run()
    print(f"\nheaders: {dict(sorted(seen.items()))}")


@pytest.mark.parametrize(
    "headers",
    [
        [AUTH, (b"Authorization", b"Bearer wrong")],
        [(b"Authorization", b"Bearer wrong"), AUTH],
        [AUTH, AUTH],
        [AUTH, (b"X-GLM-Timeout", b"1"), (b"X-GLM-Timeout", b"abc")],
        [AUTH, (b"X-GLM-Timeout", b"abc"), (b"X-GLM-Timeout", b"1")],
        [AUTH, (b"X-GLM-Capabilities", b"vision"), (b"X-GLM-Capabilities", b"nope")],
        [AUTH, (b"Content-Length", b"5")],
        [AUTH, (b"Content-Length", b"99999")],
        [AUTH, (b"Transfer-Encoding", b"chunked")],
        [AUTH, (b"X-Request-Id", b"a"), (b"X-Request-Id", b"\xff\x00b")],
        [AUTH, (b"X-GLM-Prefer", "成本".encode())],
        [AUTH, (b"X-GLM-Providers", b"zai\x01,openrouter\x7f")],
    ],
    ids=[
        "auth-valid-then-wrong",
        "auth-wrong-then-valid",
        "auth-twice",
        "timeout-ok-then-junk",
        "timeout-junk-then-ok",
        "capabilities-twice",
        "content-length-twice-smaller",
        "content-length-twice-larger",
        "content-length-and-chunked",
        "request-id-twice-binary",
        "prefer-non-latin1",
        "providers-control-chars",
    ],
)
@pytest.mark.parametrize("path", BODY_PATHS)
def test_duplicate_and_invalid_headers(
    gw: Proc, log: LogWatch, headers: list[tuple[bytes, bytes]], path: str
) -> None:
    body = b'{"name":"fuzz"}' if path == KEYS else OK
    _send(gw, "POST", path, headers, body, log)


# --- bodies that are not JSON, not UTF-8, too big, too deep ---------------------------------

mangled = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.integers(0, len(OK)), st.binary(min_size=1, max_size=8)).map(
        lambda t: OK[: t[0]] + t[1] + OK[t[0] :]
    ),
    st.integers(0, len(OK) - 1).map(lambda n: OK[:n]),
    st.binary(min_size=1, max_size=6).map(
        lambda b: b'{"model":"auto","messages":[{"role":"user","content":"' + b + b'"}]}'
    ),
    st.sampled_from(
        [
            b'{"model":"auto","messages":[{"role":"user","content":"\xff\xfe\xc0\xaf"}]}',
            b'{"model":"\xed\xa0\x80","messages":[{"role":"user","content":"hi"}]}',
            b'{"model":"auto","messages":[{"role":"user","content":"\\ud800"}]}',
            b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"n":NaN}',
            b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"n":1e999}',
            b'{"model":"auto","model":5,"messages":[{"role":"user","content":"hi"}]}',
            b"\xef\xbb\xbf" + OK,
            OK + b"garbage",
            b"[]",
            b"null",
            b'"x"',
            b"1",
        ]
    ),
)


def test_malformed_json_and_invalid_utf8(gw: Proc, log: LogWatch) -> None:
    seen: Counter[str] = Counter()

    @given(body=mangled, path=st.sampled_from(BODY_PATHS))
    @fuzz_settings(80)
    def run(body: bytes, path: str) -> None:
        seen[f"{path} {_send(gw, 'POST', path, [AUTH, JSON], body, log)}"] += 1

    run()
    print(f"\nmalformed: {dict(sorted(seen.items()))}")


CAP = 20 * 1024 * 1024
"""server.max_body_bytes in the shipped gateway.yaml (the fuzz gateway runs on it)."""


def _sized(size: int) -> bytes:
    """A valid chat body of exactly ``size`` bytes (one long user message)."""
    head = b'{"model":"auto","max_tokens":16,"messages":[{"role":"user","content":"'
    tail = b'"}]}'
    return head + b"a " * ((size - len(head) - len(tail)) // 2) + tail


@pytest.mark.parametrize("path", BODY_PATHS)
@pytest.mark.parametrize("size", [CAP, CAP + 1], ids=["at-cap", "over-cap"])
def test_bodies_at_and_over_the_cap(gw: Proc, log: LogWatch, path: str, size: int) -> None:
    body = _sized(size)
    body = body if len(body) == size else body[:-4] + b" " + body[-4:]
    assert len(body) == size
    status = _send(gw, "POST", path, [AUTH, JSON], body, log)
    assert (status == 413) == (size > CAP), status


FN = {"name": "f", "parameters": {"type": "object", "x": "@"}}
NESTED_WHERE: dict[str, dict[str, Any]] = {
    "extra": {"messages": [USER], "x": "@"},
    "content_part": {"messages": [{"role": "user", "content": [{"type": "text", "x": "@"}]}]},
    "tool_parameters": {"messages": [USER], "tools": [{"type": "function", "function": FN}]},
    "json_schema": {
        "messages": [USER],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": "@"}},
    },
    "route": {"messages": [USER], "route": "@"},
}
"""Where the nesting goes: the ``"@"`` is replaced by it."""


def _nest(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _depth_cases() -> Iterator[Any]:
    for depth in (10, 300, 1000, 10_000):
        for where in NESTED_WHERE:
            for path, stream in ((CHAT, False), (CHAT, True), (ROUTE, False)):
                tail = "-stream" if stream else ""
                name = f"{depth}-{where}-{path.rsplit('/', 1)[1]}{tail}"
                yield pytest.param(depth, where, path, stream, id=name)


@pytest.mark.parametrize(("depth", "where", "path", "stream"), list(_depth_cases()))
def test_deep_nesting(
    gw: Proc, log: LogWatch, depth: int, where: str, path: str, stream: bool
) -> None:
    body = {"model": "auto", "stream": stream, **NESTED_WHERE[where]}
    head, tail = _dumps(body).split(b'"@"')
    nested = _dumps(_nest(depth)) if depth <= 500 else _deep_text(depth)
    status = _send(gw, "POST", path, [AUTH, JSON], head + nested + tail, log)
    if depth > 64:  # limits.max_json_depth in the shipped gateway.yaml
        assert status == 400, status


def _deep_text(depth: int) -> bytes:
    """``[[[...]]]`` ``depth`` levels deep, as text (Python's json cannot nest this far)."""
    return b"[" * depth + b'"leaf"' + b"]" * depth


@pytest.mark.parametrize("depth", [300, 1000, 10_000])
def test_deep_nesting_in_a_key_spec(gw: Proc, log: LogWatch, depth: int) -> None:
    _send(
        gw,
        "POST",
        KEYS,
        [AUTH, JSON],
        b'{"name":"n","allowed_variants":' + _deep_text(depth) + b"}",
        log,
    )


# --- Schemathesis's first find: an object or array as a content part's type (was a 500)


@pytest.mark.parametrize("kind", [{"a": 1}, ["image_url"]], ids=["object", "array"])
@pytest.mark.parametrize("path", [CHAT, ROUTE])
def test_content_part_type_object_or_list(gw: Proc, log: LogWatch, kind: Any, path: str) -> None:
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": [{"type": kind, "text": "x"}]}],
    }
    status = _send(gw, "POST", path, [AUTH, JSON], orjson.dumps(body), log)
    assert status == 400
