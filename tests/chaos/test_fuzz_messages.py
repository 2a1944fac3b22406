"""Fuzzing ``/v1/messages`` and ``/v1/messages/count_tokens`` against a real gateway and
simulator: Schemathesis fed Anthropic's official OpenAPI document (the spec's
``CreateMessageParams`` and ``CountMessageTokensParams``, positive and negative cases), and
Hypothesis raw bodies (any JSON in every Messages field and content block, over a raw socket,
to the planner's choice, a chat-only host and a host that takes Messages natively).

The verdict, in Anthropic's terms: no 5xx but 502/503/504/529, every error a spec-valid
``ErrorResponse`` that the SDK parses, every 200 a spec-valid ``Message`` or event stream
(tests/support/messages_wire.py), and no traceback in the gateway's log.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
import requests
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.support.fuzz import (
    MASTER_KEY,
    LogWatch,
    fuzz_gateway,
    fuzz_settings,
    raw_request,
)
from tests.support.messages_wire import check_error, check_message, check_stream
from tests.support.openapi import anthropic_spec
from tests.support.procs import Proc

pytestmark = pytest.mark.chaos
MESSAGES, COUNT = "/v1/messages", "/v1/messages/count_tokens"
UPSTREAM_STATUSES = frozenset({502, 503, 504, 529})
"""The only 5xx a client may see, and only with Anthropic's error body."""
MODELS = ("claude-sonnet-4-5", "claude-opus-4-8", "claude-haiku-4-5[1m]", "glm-4.7", "auto")
EXAMPLES = {
    (MESSAGES, GenerationMode.POSITIVE): 100,
    (MESSAGES, GenerationMode.NEGATIVE): 100,
    (COUNT, GenerationMode.POSITIVE): 50,
    (COUNT, GenerationMode.NEGATIVE): 50,
}


def anthropic_verdict(
    status: int, headers: Mapping[str, Any], body: bytes, where: str, path: str
) -> None:
    """Assert one answer is acceptable in Anthropic's terms (see the module doc)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ctype = lowered.get("content-type", "")
    ctype = ctype[0] if isinstance(ctype, list) else ctype  # Schemathesis: name -> [values]
    detail = f"{where}\n-> {status} {ctype}: {body[:600]!r}"
    assert status < 500 or status in UPSTREAM_STATUSES, "server error " + detail
    if status >= 400:
        assert ctype.startswith("application/json"), "error not JSON " + detail
        try:
            check_error(orjson.loads(body))
        except (AssertionError, ValueError) as exc:
            raise AssertionError(f"error not in Anthropic's shape ({exc}) {detail}") from None
        return
    if path == COUNT:
        count = orjson.loads(body)
        assert isinstance(count.get("input_tokens"), int), detail
    elif ctype.startswith("text/event-stream"):
        try:
            check_stream(body)
        except AssertionError as exc:
            raise AssertionError(f"stream not valid ({exc}) {detail}") from None
    else:
        try:
            check_message(orjson.loads(body))
        except (AssertionError, ValueError) as exc:
            raise AssertionError(f"message not valid ({exc}) {detail}") from None


@functools.cache
def operation(path: str) -> Any:
    """The spec's ``POST`` of ``path`` as a Schemathesis operation (every other path dropped)."""
    doc = dict(anthropic_spec())
    doc["paths"] = {path: {"post": doc["paths"][path]["post"]}}
    return schemathesis.openapi.from_dict(doc)[path]["POST"]


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with fuzz_gateway(simulator, tmp_path_factory.mktemp("fuzz-messages")) as proc:
        yield proc


@pytest.mark.parametrize(("path", "mode"), list(EXAMPLES), ids=lambda v: str(v).strip("/"))
def test_anthropic_schema_cases_get_a_message_or_an_anthropic_error(
    gw: Proc, path: str, mode: GenerationMode
) -> None:
    log = LogWatch(gw)
    seen: Counter[int] = Counter()
    session = requests.Session()

    @given(
        case=operation(path).as_strategy(generation_mode=mode),
        model=st.sampled_from((None, None, *MODELS)),
    )
    @fuzz_settings(EXAMPLES[(path, mode)])
    def run(case: Any, model: str | None) -> None:
        if model is not None and isinstance(case.body, dict):
            case.body["model"] = model
        case.headers = {**(case.headers or {}), "x-api-key": MASTER_KEY}
        r = case.call(base_url=gw.url, session=session, timeout=60)
        seen[r.status_code] += 1
        where = case.as_curl_command()
        anthropic_verdict(r.status_code, r.headers, r.content, where, path)
        log.assert_no_traceback(f" after {where}")

    try:
        run()
    finally:
        session.close()
        print(f"\n{path} {mode}: {sum(seen.values())} cases, statuses {dict(sorted(seen.items()))}")


# --- Hypothesis over raw Messages bodies -------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**70),  # past int64: orjson refuses these
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=10,
)
BLOCK_TYPES = (
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "search_result", "mid_conv_system", "compaction", "server_tool_use",
    "web_search_tool_result", "tool_reference", "container_upload",
)  # fmt: skip
BLOCK_FIELDS = (
    "text", "source", "id", "name", "input", "tool_use_id", "content", "is_error", "thinking",
    "signature", "data", "cache_control", "citations", "title",
)  # fmt: skip
block = st.fixed_dictionaries(
    {"type": st.sampled_from(BLOCK_TYPES) | json_values},
    optional={k: json_values for k in BLOCK_FIELDS},
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system"]) | json_values,
        "content": st.text(max_size=20) | st.lists(block | json_values, max_size=4) | json_values,
    }
)
FIELDS = (
    "system", "stream", "tools", "tool_choice", "temperature", "top_p", "top_k",
    "stop_sequences", "metadata", "thinking", "output_config", "output_format",
    "context_management", "service_tier", "mcp_servers", "container", "cache_control",
)  # fmt: skip
tool = st.fixed_dictionaries(
    {"name": st.sampled_from(["Bash", "Read"]) | json_values},
    optional={
        "type": st.sampled_from(["custom", "web_search_20250305", "bash_20250124"]) | json_values,
        "input_schema": st.just({"type": "object"}) | json_values,
        "description": json_values,
    },
)
field_values = {
    "tools": st.lists(tool, max_size=3) | json_values,
    "tool_choice": st.fixed_dictionaries(
        {"type": st.sampled_from(["auto", "any", "tool", "none"]) | json_values},
        optional={"name": json_values, "disable_parallel_tool_use": json_values},
    ),
    "thinking": st.fixed_dictionaries(
        {"type": st.sampled_from(["enabled", "disabled", "adaptive"]) | json_values},
        optional={"budget_tokens": json_values, "display": json_values},
    ),
    "output_config": st.fixed_dictionaries(
        {},
        optional={"effort": st.sampled_from(["low", "max"]) | json_values, "format": json_values},
    ),
}
messages_bodies = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(MODELS) | st.sampled_from(MODELS) | json_values,
            "max_tokens": st.integers(min_value=1, max_value=4096) | json_values,
            "messages": st.lists(message, min_size=1, max_size=3)
            | st.lists(message, min_size=1, max_size=3)
            | json_values,
        }
    ),
    st.dictionaries(
        st.sampled_from(FIELDS),
        json_values,
        max_size=3,
    ).flatmap(
        lambda d: st.fixed_dictionaries(
            {
                k: (field_values[k] | json_values) if k in field_values else st.just(v)
                for k, v in d.items()
            }
        )
    ),
)
"""A model, max_tokens and messages (mostly well-formed, any JSON inside the blocks), and up to
three other fields holding any JSON or a near-valid value."""


def _dumps(value: Any) -> bytes:
    """JSON text as UTF-8 (stdlib json: integers past 64 bits too, which orjson refuses)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def test_any_json_in_every_messages_field(gw: Proc) -> None:
    log = LogWatch(gw)
    seen: Counter[str] = Counter()
    auth = [
        (b"x-api-key", MASTER_KEY.encode()),
        (b"anthropic-version", b"2023-06-01"),
        (b"Content-Type", b"application/json"),
    ]

    @given(
        body=messages_bodies,
        path=st.sampled_from([MESSAGES, MESSAGES, COUNT]),
        host=st.sampled_from([None, b"openrouter", b"zai"]),  # routed, translated, native
    )
    @fuzz_settings(200)
    def run(body: dict[str, Any], path: str, host: bytes | None) -> None:
        raw = _dumps(body)
        steer = [(b"X-GLM-Providers", host)] if host else []
        answer = raw_request(gw.url, "POST", path, [*auth, *steer], raw)
        if answer.status >= 500:
            time.sleep(0.3)  # uvicorn logs an escaped exception after the answer is out
        where = f"POST {path} providers={host!r} body={raw[:1500]!r}"
        anthropic_verdict(answer.status, answer.headers, answer.body, where, path)
        log.assert_no_traceback(f" after {where}")
        seen[f"{path} {answer.status}"] += 1

    run()
    print(f"\nany JSON: {dict(sorted(seen.items()))}")
