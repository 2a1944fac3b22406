"""Prometheus metrics, the access log line, the dashboard JSON and ``glm-gateway top``, read
from a real gateway (session fixture) routed to the real simulator."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.catalogue.loader import load_config
from gateway.catalogue.target import Target
from tests.support.procs import CONFIG, ROOT, Proc

MASTER = "sk-test-master"  # the session gateway's master key (tests/conftest.py)
AUTH = {"Authorization": f"Bearer {MASTER}"}
DEPLOY = ROOT / "deploy"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gw: Proc) -> tuple[Samples, set[str]]:
    """Every sample of ``/metrics`` and the metric family names."""
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    samples: Samples = {}
    families: set[str] = set()
    for fam in text_string_to_metric_families(text):
        families.add(fam.name)
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def chat(gw: Proc, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions", json=body, headers={**AUTH, **(headers or {})}, timeout=30
    )


@pytest.fixture(scope="module")
def pair(simulator: Proc) -> tuple[Target, Target]:
    """Two priced deployments of one variant on plain OpenAI-dialect hosts."""
    targets = load_config(CONFIG, demo_simulator_url=simulator.url).catalogue.targets
    plain = [t for t in targets if t.dialect == "openai" and t.price and t.price.input > 0]
    for t in plain:
        other = [o for o in plain if o.variant.id == t.variant.id and o.provider != t.provider]
        if other:
            return t, other[0]
    raise AssertionError("the shipped config has no variant on two priced OpenAI hosts")


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_requests_tokens_and_cost_by_variant_provider_key(
    gateway: Proc, pair: tuple[Target, Target]
) -> None:
    target = pair[0]
    before, _ = scrape(gateway)
    r = chat(
        gateway,
        {"model": target.variant.id, "messages": msgs("count my tokens")},
        {"X-GLM-Providers": target.provider},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-glm-provider"] == target.provider
    usage = r.json()["usage"]
    after, _ = scrape(gateway)
    v, p = target.variant.id, target.provider

    def delta(name: str, **labels: str) -> float:
        return grew(before, after, name, **labels)

    req = {"variant": v, "provider": p, "status": "200", "stream": "false"}
    assert delta("glm_gateway_requests_total", **req) == 1
    key = {"variant": v, "provider": p, "key": "master"}
    assert delta("glm_gateway_tokens_total", direction="in", **key) == usage["prompt_tokens"]
    assert delta("glm_gateway_tokens_total", direction="out", **key) == usage["completion_tokens"]
    expected = target.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
    assert expected > 0
    assert delta("glm_gateway_cost_usd_total", **key) == pytest.approx(expected)
    assert delta("glm_gateway_upstream_attempts_total", variant=v, provider=p, outcome="ok") == 1
    assert delta("glm_gateway_request_duration_seconds_count", variant=v, stream="false") == 1
    assert delta("glm_gateway_overhead_seconds_count", stream="false") >= 1
    for stage in ("parse", "route", "state", "upstream_wait", "other"):
        assert delta("glm_gateway_stage_duration_seconds_count", stage=stage) >= 1, stage


def test_streams_observe_time_to_first_token_and_inter_chunk_once(
    gateway: Proc, pair: tuple[Target, Target]
) -> None:
    target = pair[0]
    labels = {"variant": target.variant.id, "provider": target.provider}
    before, _ = scrape(gateway)
    body = {
        "model": target.variant.id,
        "messages": msgs("stream a few words please"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={**AUTH, "X-GLM-Providers": target.provider},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) > 3
    after, _ = scrape(gateway)
    for name in (
        "glm_gateway_time_to_first_token_seconds_count",
        "glm_gateway_stream_inter_chunk_seconds_count",
    ):
        assert grew(before, after, name, **labels) == 1, name
    tokens = {**labels, "key": "master", "direction": "out"}
    assert grew(before, after, "glm_gateway_tokens_total", **tokens) > 0


def test_fallback_counts_reason_and_from_to_variant(
    gateway: Proc, pair: tuple[Target, Target]
) -> None:
    ok, failing = pair
    v = ok.variant.id
    # 500 (transient: retried, then the next provider) opens no circuit other tests could meet
    fault = {"match": {"provider": failing.provider}, "status": 500, "message": "flaky"}
    before, _ = scrape(gateway)
    r = chat(
        gateway,
        {"model": v, "messages": msgs("<<sim:" + orjson.dumps(fault).decode() + ">> hello")},
        {"X-GLM-Providers": f"{failing.provider},{ok.provider}"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-glm-provider"] == ok.provider
    reason = r.headers["x-glm-fallback-reason"].split()[1]  # "<target> <class> <status>"
    after, _ = scrape(gateway)
    fb = {"reason": reason, "from_variant": v, "to_variant": v}
    assert grew(before, after, "glm_gateway_fallbacks_total", **fb) == 1
    failed = {"variant": v, "provider": failing.provider, "outcome": reason}
    assert grew(before, after, "glm_gateway_upstream_attempts_total", **failed) >= 1


def test_errors_by_code_and_status(gateway: Proc) -> None:
    before, _ = scrape(gateway)
    r = httpx.post(gateway.url + "/v1/chat/completions", content=b"{not json", headers=AUTH)
    assert r.status_code == 400
    code = r.json()["error"]["code"]
    after, _ = scrape(gateway)
    assert grew(before, after, "glm_gateway_request_errors_total", error=code) == 1
    bad = {"variant": "none", "provider": "none", "status": "400"}
    assert grew(before, after, "glm_gateway_requests_total", **bad) == 1


def test_circuits_runtime_and_state_backend(gateway: Proc, simulator: Proc) -> None:
    chat(gateway, {"model": "auto", "messages": msgs("warm up")})
    targets = load_config(CONFIG, demo_simulator_url=simulator.url).catalogue.targets
    samples, _ = scrape(gateway)
    circuits = {dict(ls)["deployment"] for (n, ls) in samples if n == "glm_gateway_circuit_state"}
    assert circuits == {t.id for t in targets}
    assert all(
        v in (0.0, 1.0, 2.0) for (n, _), v in samples.items() if n == "glm_gateway_circuit_state"
    )
    assert total(samples, "glm_gateway_state_up", backend="memory") == 1
    assert not any(n.endswith("_created") for n, _ in samples)
    assert ("glm_gateway_in_flight_requests", frozenset()) in samples
    assert total(samples, "glm_gateway_build_info") == 1
    wait_for(
        lambda: total(scrape(gateway)[0], "glm_gateway_event_loop_lag_seconds_count") > 0,
        "an event-loop lag sample",
    )


def test_every_metric_is_documented_and_every_query_names_a_real_metric(gateway: Proc) -> None:
    chat(gateway, {"model": "auto", "messages": msgs("fill the families")})
    _, families = scrape(gateway)
    ours = {f for f in families if f.startswith("glm_gateway_")}
    readme = (DEPLOY / "README.md").read_text()
    undocumented = sorted(f for f in ours if f"`{f}" not in readme)
    assert not undocumented, f"add to deploy/README.md: {undocumented}"
    referenced: set[str] = set()
    for path in (DEPLOY / "prometheus" / "alerts.yml", DEPLOY / "grafana" / "glm-gateway.json"):
        referenced |= set(re.findall(r"glm_gateway_[a-z_]+", path.read_text()))
    base = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in referenced}
    unknown = sorted(n for n in base if n not in ours)
    assert not unknown, f"deploy/ queries metrics the gateway does not export: {unknown}"


def test_access_log_line_has_ids_attempts_tokens_and_no_prompt(gateway: Proc) -> None:
    rid = "req-obs-" + uuid.uuid4().hex
    marker = "PROMPT-MARKER-" + uuid.uuid4().hex
    r = chat(gateway, {"model": "auto", "messages": msgs(marker)}, {"X-Request-Id": rid})
    assert r.status_code == 200

    def line() -> dict[str, Any] | None:
        for text in gateway.log_text().splitlines():
            if rid in text and text.startswith("{"):
                rec: dict[str, Any] = orjson.loads(text)
                return rec
        return None

    rec = wait_for(line, "the access log line")
    assert marker not in gateway.log_text()
    assert MASTER not in gateway.log_text()
    assert rec["event"] == "request" and rec["key_id"] == "master" and rec["status"] == 200
    assert rec["variant"] == r.headers["x-glm-variant"]
    assert rec["provider"] == r.headers["x-glm-provider"]
    assert rec["attempts"]
    assert {"provider", "variant", "class", "status"} <= rec["attempts"][-1].keys()
    assert rec["tokens_in"] == r.json()["usage"]["prompt_tokens"]
    assert "cost_usd" in rec and "adaptations" in rec
    assert {"total_ms", "overhead_ms", "parse_ms", "route_ms", "state_ms", "upstream_ms"} <= set(
        rec["durations"]
    )


def test_dashboard_data_needs_the_master_key(gateway: Proc) -> None:
    url = gateway.url + "/dashboard/data"
    assert httpx.get(url).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-key"})
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "permission_denied"
    r = httpx.get(url, headers=AUTH)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    data = r.json()
    for key in ("series", "summary", "circuits", "totals", "in_flight", "state", "loop_lag_ms"):
        assert key in data, key
    assert data["totals"]["requests"] > 0
    assert len(data["series"]["t"]) == len(data["series"]["rps"]) == len(data["series"]["p95_ms"])


def test_dashboard_page_is_static_offline_and_public(gateway: Proc) -> None:
    page = httpx.get(gateway.url + "/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert '<meta name="glm-auth" content="on">' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    for name in ("app.js", "style.css"):
        asset = httpx.get(f"{gateway.url}/dashboard/{name}")
        assert asset.status_code == 200, name
        assert not re.search(r"https?://", asset.text), f"{name} must not load anything remote"
    missing = httpx.get(gateway.url + "/dashboard/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def run_top(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "top", "--once", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "160", "HOME": str(Path.home())},
    )


def test_top_prints_the_live_figures(gateway: Proc) -> None:
    chat(gateway, {"model": "auto", "messages": msgs("for top")})
    done = run_top("--url", gateway.url, "--key", MASTER)
    assert done.returncode == 0, done.stderr
    assert "req/s" in done.stdout and "circuits" in done.stdout and "by variant" in done.stdout
    refused = run_top("--url", gateway.url, "--key", "wrong")
    assert refused.returncode == 2 and "master key" in refused.stderr
