"""deploy/prometheus against a real Prometheus server (Debian ``prometheus``) scraping a real
gateway: the rules load and pass their unit tests, a query returns the request count, and every
Grafana panel's query is valid PromQL that Prometheus accepts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.procs import OUT, ROOT, Proc, free_port

PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana" / "glm-gateway.json"
MASTER = "sk-test-master"


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed: this test needs the Debian package 'prometheus' "
            "(apt-get install -y prometheus; .ci/run installs it)."
        )
    return path


def promtool(*args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def wait_until(check: Any, what: str, timeout: float = 90.0) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"gave up waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def prometheus(gateway: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus on loopback with the shipped config, pointed at the session gateway."""
    exe = binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(PROM_DIR / f) for f in cfg["rule_files"]]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "glm-gateway"]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"][0]["targets"] = [gateway.url.removeprefix("http://")]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    OUT.mkdir(parents=True, exist_ok=True)
    log = (OUT / f"prometheus-{port}.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and httpx.get(url + "/-/ready").status_code == 200,
                   f"Prometheus ready (log: {log.name})")  # fmt: skip
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def query(prom: str, expr: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(prom + "/api/v1/query", params={"query": expr}).json()
    return body


def test_rules_and_config_pass_promtool() -> None:
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0 and "SUCCESS" in rules.stdout, rules.stdout + rules.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    tests = promtool("test", "rules", "alerts_test.yml")
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_prometheus_scrapes_the_gateway_and_counts_requests(prometheus: str, gateway: Proc) -> None:
    sent = 3
    for i in range(sent):
        r = httpx.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": f"scrape me {i}"}]},
            headers={"Authorization": f"Bearer {MASTER}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text

    def counted() -> float | None:
        res = query(prometheus, 'sum(glm_gateway_requests_total{job="glm-gateway"})')
        assert res["status"] == "success", res
        got = res["data"]["result"]
        return float(got[0]["value"][1]) if got and float(got[0]["value"][1]) >= sent else None

    assert wait_until(counted, "the request count in Prometheus") >= sent
    targets = httpx.get(prometheus + "/api/v1/targets").json()["data"]["activeTargets"]
    (ours,) = [t for t in targets if t["labels"]["job"] == "glm-gateway"]
    assert ours["health"] == "up", ours


def test_alert_rules_load_and_evaluate(prometheus: str) -> None:
    shipped = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    names = {r["alert"] for g in shipped["groups"] for r in g["rules"]}

    def evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(prometheus + "/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else None

    rules = wait_until(evaluated, "every rule evaluated with health ok")
    assert {r["name"] for r in rules} == names
    assert all(r["type"] == "alerting" for r in rules)


def grafana_queries() -> list[tuple[str, str]]:
    dash = json.loads(GRAFANA.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def test_every_grafana_query_is_accepted_by_prometheus(prometheus: str) -> None:
    queries = grafana_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        concrete = expr.replace("$__rate_interval", "1m").replace("$job", "glm-gateway")
        assert "$" not in concrete, (title, expr)
        res = query(prometheus, concrete)
        assert res["status"] == "success", (title, concrete, res)


def test_grafana_dashboard_has_the_built_in_pages_panels() -> None:
    dash = json.loads(GRAFANA.read_text())
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    page = (ROOT / "gateway" / "dashboard" / "index.html").read_text().lower()
    for topic in ("requests/s", "latency", "overhead", "error", "fallback", "variant",
                  "provider", "circuit", "tokens", "cost", "loop lag"):  # fmt: skip
        assert topic in titles, f"Grafana lacks a {topic} panel"
        assert topic in page, f"the built-in page lacks a {topic} panel"
    assert {p["datasource"]["uid"] for p in dash["panels"] if "datasource" in p} == {
        "${datasource}"
    }
    assert re.fullmatch(r"[a-z0-9-]+", dash["uid"])
