"""Every request gets an ``X-Request-Id`` and an access line, not only the front-end APIs: an
unknown path (404), a wrong method (405), a head too large (431), models, route, count_tokens,
health, readiness, metrics, the dashboard, admin, OpenAPI. A client's id is kept (the chat
rule); a probe or scrape is logged but counted in no request metric."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.test_header_cap import exchange
from tests.support.e2e import AUTH, log_records, nonce, wait_log_for
from tests.support.procs import Proc

HEAD_LIMIT = 32768  # server.max_header_bytes of the packaged gateway.yaml

CASES = [
    # method, path, headers, json body, status, api, key_id, error
    ("GET", "/no/such/path", {}, None, 404, "other", "-", "not_found"),
    ("DELETE", "/healthz", {}, None, 405, "ops", "-", "method_not_allowed"),
    ("GET", "/healthz", {}, None, 200, "ops", "-", None),
    ("GET", "/readyz", {}, None, 200, "ops", "-", None),
    ("GET", "/metrics", {}, None, 200, "ops", "-", None),
    ("GET", "/openapi.json", {}, None, 200, "openapi", "-", None),
    ("GET", "/v1/models", AUTH, None, 200, "models", "master", None),
    ("GET", "/v1/models", {}, None, 401, "models", "-", "invalid_api_key"),
    ("GET", "/v1/responses/resp_1", AUTH, None, 404, "responses", "-", "response_not_found"),
    ("GET", "/dashboard", AUTH, None, 200, "dashboard", "-", None),
    ("GET", "/admin/keys", {}, None, 401, "admin", "-", "invalid_api_key"),
    (
        "POST",
        "/v1/route",
        AUTH,
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        200,
        "route",
        "master",
        None,
    ),
    (
        "POST",
        "/v1/messages/count_tokens",
        {**AUTH, "anthropic-version": "2023-06-01"},
        {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]},
        200,
        "count_tokens",
        "master",
        None,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "api", "key_id", "error"),
    CASES,
    ids=[f"{c[0]} {c[1]} {c[4]}" for c in CASES],
)
def test_every_request_has_an_id_and_an_access_line(
    gateway: Proc,
    method: str,
    path: str,
    headers: dict[str, str],
    body: object,
    status: int,
    api: str,
    key_id: str,
    error: str | None,
) -> None:
    r = httpx.request(method, gateway.url + path, headers=headers, json=body, timeout=30)
    assert r.status_code == status, r.text
    rid = r.headers["x-request-id"]
    assert rid.startswith("req_") and len(r.headers.get_list("x-request-id")) == 1
    line = wait_log_for(gateway, rid)
    assert (line["status"], line["api"], line["method"], line["path"]) == (
        status,
        api,
        method,
        path,
    )
    assert (line["key_id"], line["error"], line["client"]) == (key_id, error, "127.0.0.1")
    assert line["event"] == "request" and line["duration_ms"] >= 0
    assert line["variant"] == "none" and line["attempts"] == []


def test_a_client_request_id_is_kept_as_on_chat(gateway: Proc) -> None:
    mine = f"client-{nonce()}"
    for path in ("/no/such/path", "/healthz", "/v1/models"):
        r = httpx.get(gateway.url + path, headers={**AUTH, "X-Request-Id": mine}, timeout=30)
        assert r.headers.get_list("x-request-id") == [mine]
    paths = _paths_logged(gateway, mine, count=3)
    assert sorted(paths) == ["/healthz", "/no/such/path", "/v1/models"]
    r = httpx.post(
        gateway.url + "/v1/route",
        headers={**AUTH, "X-Request-Id": mine + "-route"},
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.headers.get_list("x-request-id") == [mine + "-route"]
    assert wait_log_for(gateway, mine + "-route")["path"] == "/v1/route"


def test_a_head_too_large_is_logged(gateway: Proc) -> None:
    raw = exchange(gateway, "GET", "/healthz", HEAD_LIMIT + 1)
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 431")
    rid = next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.startswith("x-request-id:")
    )
    line = wait_log_for(gateway, rid)
    assert (line["status"], line["path"], line["error"]) == (
        431,
        "/healthz",
        "request_header_fields_too_large",
    )


def test_probes_and_scrapes_count_in_no_request_metric(gateway: Proc) -> None:
    for _ in range(3):
        assert httpx.get(gateway.url + "/healthz", timeout=30).status_code == 200
    text = httpx.get(gateway.url + "/metrics", timeout=30).text
    series = [ln for ln in text.splitlines() if ln.startswith("glm_gateway_requests_total{")]
    assert not [ln for ln in series if 'api="ops"' in ln or 'api="other"' in ln], series


def _paths_logged(gateway: Proc, request_id: str, count: int) -> list[str]:
    """The paths of the access lines with ``request_id``, once there are ``count`` (20 s)."""
    end = time.monotonic() + 20
    while True:
        paths = [str(r["path"]) for r in log_records(gateway) if r.get("request_id") == request_id]
        if len(paths) >= count or time.monotonic() > end:
            return paths
        time.sleep(0.05)


def test_a_key_in_an_unknown_path_is_not_logged(gateway: Proc) -> None:
    secret = "sk-" + "x7" * 24
    r = httpx.get(f"{gateway.url}/v1/{secret}/models", timeout=30)
    assert r.status_code == 404
    line = wait_log_for(gateway, r.headers["x-request-id"])
    assert secret not in str(line) and "[REDACTED]" in line["path"]
