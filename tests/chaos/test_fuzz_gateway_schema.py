"""Schemathesis, fed the gateway's own ``GET /openapi.json``, over every endpoint it describes.

Auth is on and every case carries the master key (so ``/admin/keys`` is reachable). Each
operation gets positive and negative cases; every answer must pass
:func:`tests.support.fuzz.verdict` (no 500, OpenAI's error shape) and Schemathesis's
conformance checks against the document (status code, content type, response schema and
headers, negative data rejected, auth not ignored), and the gateway may log no traceback.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as oc

from tests.support.fuzz import MASTER_KEY, LogWatch, fuzz_gateway, fuzz_settings, verdict
from tests.support.procs import Proc

pytestmark = pytest.mark.chaos
EXAMPLES_PER_OPERATION = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 12}
CHECKS = [
    oc.status_code_conformance,
    oc.content_type_conformance,
    oc.response_schema_conformance,
    oc.response_headers_conformance,
    oc.negative_data_rejection,
    oc.ignored_auth,
]
"""Not ``not_a_server_error`` (:func:`verdict` allows 502/503/504 in OpenAI's shape) nor
``positive_data_acceptance`` (a well-formed request is still a 400 when no variant can serve
what it asks, or a 404 for a model id the document cannot enumerate)."""


@pytest.fixture(scope="module")
def gw(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with fuzz_gateway(simulator, tmp_path_factory.mktemp("fuzz-own")) as proc:
        yield proc


def test_the_document_describes_every_endpoint(gw: Proc) -> None:
    doc = httpx.get(gw.url + "/openapi.json", timeout=30).json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops >= {
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("POST", "/v1/route"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/data"),
        ("POST", "/admin/keys"),
        ("GET", "/admin/keys"),
        ("GET", "/admin/keys/{key_id}"),
        ("DELETE", "/admin/keys/{key_id}"),
        ("GET", "/openapi.json"),
    }
    assert doc["components"]["schemas"]["ErrorResponse"]["required"] == ["error"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}


@pytest.mark.parametrize("mode", list(EXAMPLES_PER_OPERATION), ids=str)
def test_every_operation_answers_as_its_document_says(gw: Proc, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
    log = LogWatch(gw)
    seen: Counter[str] = Counter()
    failures: list[str] = []
    session = requests.Session()
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @fuzz_settings(EXAMPLES_PER_OPERATION[mode])
        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), **auth}
            r = case.call(base_url=gw.url, session=session, timeout=60)
            seen[f"{case.method} {case.path} {r.status_code}"] += 1
            where = case.as_curl_command()
            verdict(r.status_code, r.headers, r.content, where)
            case.validate_response(r, checks=CHECKS, headers=auth)
            log.assert_no_traceback(f" after {where}")

        try:
            run()
        except Unsatisfiable:  # nothing to negate: no parameters, no body
            seen[f"{operation.method.upper()} {operation.path} (no negative case)"] += 0
        except AssertionError as exc:  # every operation runs; all failures are reported
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    session.close()
    print(f"\n{mode}: {sum(seen.values())} cases")
    for key, n in sorted(seen.items()):
        print(f"  {key}: {n}")
    assert not failures, "\n\n".join(failures)
