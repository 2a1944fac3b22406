"""deploy/compose: valid against the compose specification's schema, and wired as intended.

There is no container engine here, so what `docker compose config` would refuse is checked
against the specification's JSON schema, and what it would not notice (a mounted file that is
not in the repository, nginx or Prometheus pointing at a service that does not exist, a grace
period shorter than the drain) is checked here by reading the files the services mount.
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.deploy import compose_file as cf
from tests.deploy.k8s import CONFIG_SOURCE, gateway_yaml_drain_s
from tests.support.procs import ROOT

DEMO_ENV = cf.read_env_file(cf.COMPOSE_DIR / "demo.env")
PROD_ENV = {
    **cf.read_env_file(cf.COMPOSE_DIR / "example.env"),
    "GLM_GATEWAY_MASTER_KEY": "k",
    "POSTGRES_PASSWORD": "p4ss",
}
GATEWAYS = ("gateway-1", "gateway-2")
EXACT_TAG = re.compile(
    r"^[\w./-]+:v?\d+\.\d+\.\d+(-[\w.]+)?$"
    # PostgreSQL's releases are MAJOR.MINOR (17.6 is a patch release): exact with its base OS
    r"|^postgres:\d+\.\d+-alpine\d+\.\d+$"
)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = cf.schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def duration_s(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text))


@pytest.mark.parametrize("env", [DEMO_ENV, PROD_ENV], ids=["demo", "providers"])
def test_the_file_meets_the_compose_specification(env: dict[str, str]) -> None:
    assert schema_errors(cf.raw()) == []
    assert schema_errors(cf.load(env)) == []


def test_the_schema_check_finds_what_is_wrong() -> None:
    doc = copy.deepcopy(cf.raw())
    doc["services"]["redis"]["stop_grace"] = "45s"
    doc["services"]["nginx"]["depends_on"]["gateway-1"]["condition"] = "when_ready"
    errors = schema_errors(doc)
    assert any("stop_grace" in e for e in errors), errors
    assert any("when_ready" in e for e in errors), errors


def test_one_command_brings_up_the_demo() -> None:
    demo = cf.load(DEMO_ENV)
    assert set(demo["services"]) == {
        *GATEWAYS, "nginx", "redis", "postgres", "prometheus", "grafana", "otel-collector",
        "simulator",
    }  # fmt: skip
    assert "simulator" not in cf.load(PROD_ENV)["services"]  # the demo profile only
    sim = demo["services"]["simulator"]
    sim_port = cf.flag(sim["command"], "--port")
    for name in GATEWAYS:
        url = urlsplit(cf.flag(demo["services"][name]["command"], "--simulator") or "")
        assert (url.hostname, str(url.port)) == ("simulator", sim_port)
        assert cf.flag(cf.load(PROD_ENV)["services"][name]["command"], "--simulator") == ""


def test_a_missing_master_key_is_refused_with_a_message() -> None:
    env = {k: v for k, v in PROD_ENV.items() if k != "GLM_GATEWAY_MASTER_KEY"}
    with pytest.raises(cf.InterpolationError, match="GLM_GATEWAY_MASTER_KEY"):
        cf.load(env)


def test_a_missing_postgres_password_is_refused_with_a_message() -> None:
    env = {k: v for k, v in PROD_ENV.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(cf.InterpolationError, match="POSTGRES_PASSWORD"):
        cf.load(env)


def test_the_gateways_keep_records_in_the_bundled_postgres_and_spill_to_their_own_volume() -> None:
    doc = cf.load(PROD_ENV)
    pg = doc["services"]["postgres"]
    assert EXACT_TAG.match(pg["image"]) and "ports" not in pg  # only the replicas reach it
    assert pg["environment"]["POSTGRES_PASSWORD"] == "p4ss"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    spools = set()
    for name in GATEWAYS:
        svc = doc["services"][name]
        url = urlsplit(svc["environment"]["GLM_GATEWAY_DATABASE_URL"])
        assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
        assert (url.username, url.password, url.path) == (
            pg["environment"]["POSTGRES_USER"],
            "p4ss",
            "/" + pg["environment"]["POSTGRES_DB"],
        )
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        # the spool (database.spool_dir defaults to the temp dir) outlives the container
        tmp = [v.split(":")[0] for v in svc["volumes"] if v.split(":")[1] == "/tmp"]
        assert len(tmp) == 1 and tmp[0] in doc["volumes"] and "tmpfs" not in svc, name
        spools.add(tmp[0])
    assert len(spools) == len(GATEWAYS)  # one each: a spool file is one process's
    off = cf.load({**PROD_ENV, "GLM_GATEWAY_DATABASE_URL": ""})
    assert off["services"]["gateway-1"]["environment"]["GLM_GATEWAY_DATABASE_URL"] == ""


def test_every_service_has_its_image_and_its_mounted_files() -> None:
    doc = cf.load(DEMO_ENV)
    built = {svc["image"] for svc in doc["services"].values() if "build" in svc}
    for name, svc in doc["services"].items():
        assert "image" in svc, name
        if "build" in svc:
            context = (cf.COMPOSE_DIR / svc["build"]["context"]).resolve()
            assert (context / svc["build"]["dockerfile"]).is_file(), name
        elif svc["image"] not in built:
            assert EXACT_TAG.match(svc["image"]), f"{name}: pin an exact version: {svc['image']}"
        for host, target in cf.bind_mounts(svc):
            assert host.exists(), f"{name}: mounts {host}, which is not in the repository"
            # a file over a file, a folder over a folder
            assert host.is_dir() == ("." not in Path(target).name or target.endswith(".d")), target
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in doc["volumes"], f"{name}: volume {source} is not declared"
        deps = svc.get("depends_on", {})
        for dep in deps:
            optional = isinstance(deps, dict) and deps[dep].get("required") is False
            assert dep in doc["services"] or optional, f"{name} depends on {dep}, not a service"


def test_the_gateways_use_the_shipped_config_shared_state_and_the_collector() -> None:
    doc = cf.load(DEMO_ENV)
    for name in GATEWAYS:
        svc = doc["services"][name]
        assert (CONFIG_SOURCE, "/etc/glm-gateway") in cf.bind_mounts(svc)
        assert cf.flag(svc["command"], "--port") == "8080"
        redis = urlsplit(svc["environment"]["GLM_GATEWAY_REDIS_URL"])
        assert redis.hostname == "redis" and redis.hostname in doc["services"]
        otel = urlsplit(svc["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
        collector = yaml.safe_load((cf.COMPOSE_DIR / "otel-collector.yaml").read_text())
        http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        assert otel.hostname == "otel-collector" and http.endswith(f":{otel.port}")
        assert svc["environment"]["OTEL_RESOURCE_ATTRIBUTES"] == f"service.instance.id={name}"
        assert duration_s(svc["stop_grace_period"]) >= math.ceil(gateway_yaml_drain_s()) + 5
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    pipeline = collector["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(collector[kind]), kind


def test_nginx_balances_both_replicas_as_the_chaos_test_does() -> None:
    text = (cf.COMPOSE_DIR / "nginx.conf").read_text()
    conf = "\n".join(line.split("#")[0] for line in text.splitlines())
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.M)
    assert sorted(servers) == [(g, "8080") for g in GATEWAYS]
    for directive in (
        "proxy_buffering off;",
        "proxy_next_upstream error timeout;",
        "proxy_http_version 1.1;",
    ):
        assert directive in conf, directive  # fmt: skip
    assert "http_5" not in conf  # a request that reached a replica is never sent twice
    nginx = cf.load(DEMO_ENV)["services"]["nginx"]
    assert nginx["ports"] == ["127.0.0.1:8080:8080"] and "listen 8080;" in conf


def test_prometheus_scrapes_both_replicas_with_the_projects_alert_rules(tmp_path: Path) -> None:
    svc = cf.load(DEMO_ENV)["services"]["prometheus"]
    mounts = dict((t, h) for h, t in cf.bind_mounts(svc))
    assert mounts["/etc/prometheus/alerts.yml"] == ROOT / "deploy" / "prometheus" / "alerts.yml"
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == [f"{g}:8080" for g in GATEWAYS]
    assert config["rule_files"] == ["alerts.yml"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (tests/support/system-deps.sh installs prometheus)")
    for target, host in mounts.items():  # the container's /etc/prometheus, laid out here
        shutil.copy(host, tmp_path / Path(target).name)
    run = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus() -> None:
    svc = cf.load(DEMO_ENV)["services"]["grafana"]
    mounts = dict((t, h) for h, t in cf.bind_mounts(svc))
    dashboard = mounts["/var/lib/grafana/dashboards/glm-gateway.json"]
    assert dashboard == ROOT / "deploy" / "grafana" / "glm-gateway.json"
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "glm-gateway.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    url = urlsplit(sources["datasources"][0]["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    assert sources["datasources"][0]["type"] == "prometheus"
    assert '"query": "prometheus"' in dashboard.read_text()  # its data source variable


def test_example_env_names_every_provider_key() -> None:
    providers = yaml.safe_load((CONFIG_SOURCE / "providers.yaml").read_text())["providers"]
    wanted = {p["api_key_env"] for p in providers.values() if p.get("api_key_env")}
    text = (cf.COMPOSE_DIR / "example.env").read_text()
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.M))
    assert wanted <= named, sorted(wanted - named)


def test_the_bundled_redis_gives_way_to_sentinel_or_cluster_from_the_env_file() -> None:
    """``GLM_GATEWAY_REDIS_URL=`` in .env empties the URL (the gateway reads empty as unset),
    so the Sentinel or Cluster variables from .env choose the mode alone."""
    doc = cf.load({**DEMO_ENV, "GLM_GATEWAY_REDIS_URL": ""})
    for name in GATEWAYS:
        assert doc["services"][name]["environment"]["GLM_GATEWAY_REDIS_URL"] == ""
    example = (cf.COMPOSE_DIR / "example.env").read_text()
    for var in ("GLM_GATEWAY_REDIS_SENTINELS", "GLM_GATEWAY_REDIS_CLUSTER_NODES"):
        assert f"# {var}=" in example
