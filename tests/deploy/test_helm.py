"""deploy/helm/glm-gateway: rendered offline by Helm v4's engine (PyPI helm-python-sdk) with its
defaults and several value sets; every object valid for Kubernetes (tests/deploy/k8s.py), the
values wired to the environment variables the gateway reads, bad values refused with a message
naming them. Where the real `helm` v3 binary is at hand (tests/deploy/get-k8s-tools.sh), it must
lint the chart and render the same objects."""

from __future__ import annotations

import math
import subprocess
from typing import Any

import helm_python
import pytest
import yaml

from gateway.cli import main
from tests.deploy.k8s import CONFIG_SOURCE, by_kind, gateway_yaml_drain_s, one, problems, tool
from tests.support.procs import ROOT

CHART = ROOT / "deploy" / "helm" / "glm-gateway"
RELEASE = "glm-gateway"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "redis-url-postgres-tracing-monitor": {
        "secrets": {"masterKey": "sk-master", "providerKeys": {"ZAI_API_KEY": "zk"}},
        "redis": {"mode": "standalone", "url": "redis://:pw@redis:6379/0"},
        "database": {"url": "postgresql://gw:pw@db:5432/gateway"},
        "tracing": {"enabled": True, "endpoint": "http://otel-collector:4318",
                    "resourceAttributes": "deployment.environment=prod"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "logLevel": "warning",
    },
    "sentinel-existing-secret": {
        "secrets": {"existingSecret": "gateway-keys"},
        "redis": {"mode": "sentinel", "sentinels": "s1:26379,s2:26379", "sentinelService": "gw"},
    },
    "cluster-fixed-replicas": {
        "redis": {"mode": "cluster", "clusterNodes": "c1:6379,c2:6379,c3:6379"},
        "autoscaling": {"enabled": False},
        "replicaCount": 3,
        "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "podDisruptionBudget": {"enabled": False},
        "image": {"repository": "registry.example.com/glm-gateway", "tag": "0.1.0-1"},
    },
    "own-config": {
        "config": {"files": {"gateway.yaml": "server:\n  drain_timeout_s: 60\n"}},
        "extraArgs": ["--simulator=http://sim:9100"],
    },
    "existing-config-map": {"config": {"existingConfigMap": "my-gateway-config"}},
}  # fmt: skip


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm_python.Chart.load(CHART) as chart:
        out = chart.render(values, name=RELEASE, namespace="llm")
    docs = [
        d for path, text in out.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text)
    ]
    return [d for d in docs if d]


def env_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("sentinel-existing-secret", "state: redis sentinel: sentinel service 'gw' via s1:26379,"),
        ("cluster-fixed-replicas", "state: redis cluster: cluster via c1:6379,c2:6379,c3:6379;"),
        ("redis-url-postgres-tracing-monitor", "state: redis single: "),
    ],
)
def test_the_gateway_reads_the_redis_mode_the_chart_sets(
    name: str, line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chart's Redis variables, given to ``check-config`` on the chart's own config copy."""
    env = {k: v for k, v in env_of(render(VALUE_SETS[name])).items() if "REDIS" in k}
    if name.startswith("redis-url"):  # in the chart's Secret: the value, as the pod would get it
        env["GLM_GATEWAY_REDIS_URL"] = VALUE_SETS[name]["redis"]["url"]
    assert env
    for var in (
        "GLM_GATEWAY_REDIS_URL",
        "GLM_GATEWAY_REDIS_SENTINELS",
        "GLM_GATEWAY_REDIS_SENTINEL_SERVICE",
        "GLM_GATEWAY_REDIS_CLUSTER_NODES",
    ):
        monkeypatch.delenv(var, raising=False)  # fmt: skip
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert main(["check-config", str(CHART / "config")]) == 0
    assert line in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid(name: str) -> None:
    objects = render(VALUE_SETS[name])
    assert by_kind(objects, "Deployment") and by_kind(objects, "Service")
    assert problems(objects) == []


def test_the_defaults_match_the_kustomize_base() -> None:
    objects = render({})
    assert sorted(o["kind"] for o in objects) == sorted(
        ["ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    )
    cm = one(objects, "ConfigMap")
    assert cm["data"] == {p.name: p.read_text() for p in CONFIG_SOURCE.glob("*.yaml")}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == math.ceil(gateway_yaml_drain_s()) + 10
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["image"] == "glm-gateway:0.1.0" and "envFrom" not in c
    assert set(env_of(objects)) == {"GLM_GATEWAY_CONFIG_DIR"}
    labels = pod and one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for selector in (
        one(objects, "Service")["spec"]["selector"],
        one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert all(labels[k] == v for k, v in selector.items())


def test_keys_and_urls_go_to_the_secret_and_tracing_to_the_environment() -> None:
    objects = render(VALUE_SETS["redis-url-postgres-tracing-monitor"])
    secret = one(objects, "Secret")
    assert secret["stringData"] == {
        "GLM_GATEWAY_MASTER_KEY": "sk-master",
        "ZAI_API_KEY": "zk",
        "GLM_GATEWAY_REDIS_URL": "redis://:pw@redis:6379/0",
        "GLM_GATEWAY_DATABASE_URL": "postgresql://gw:pw@db:5432/gateway",
    }
    c = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    env = env_of(objects)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert env["OTEL_SERVICE_NAME"] == "glm-gateway"
    attrs = "service.instance.id=$(POD_NAME),deployment.environment=prod"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == attrs
    assert env["GLM_GATEWAY_LOG_LEVEL"] == "warning"
    assert not any("pw" in str(v) for v in env.values())  # credentials only in the Secret
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_redis_modes_and_an_existing_secret() -> None:
    objects = render(VALUE_SETS["sentinel-existing-secret"])
    assert not by_kind(objects, "Secret")
    c = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": "gateway-keys"}}]
    env = env_of(objects)
    assert env["GLM_GATEWAY_REDIS_SENTINELS"] == "s1:26379,s2:26379"
    assert env["GLM_GATEWAY_REDIS_SENTINEL_SERVICE"] == "gw"
    objects = render(VALUE_SETS["cluster-fixed-replicas"])
    assert env_of(objects)["GLM_GATEWAY_REDIS_CLUSTER_NODES"] == "c1:6379,c2:6379,c3:6379"
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert not by_kind(objects, "HorizontalPodAutoscaler")
    assert not by_kind(objects, "PodDisruptionBudget")
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"] == VALUE_SETS["cluster-fixed-replicas"]["resources"]
    assert c["image"] == "registry.example.com/glm-gateway:0.1.0-1"


def test_the_grace_period_follows_the_config_given() -> None:
    objects = render(VALUE_SETS["own-config"])
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 60 + 10  # default grace, its drain
    assert one(objects, "ConfigMap")["data"]["gateway.yaml"] == "server:\n  drain_timeout_s: 60\n"
    assert pod["containers"][0]["args"][-1] == "--simulator=http://sim:9100"
    objects = render(VALUE_SETS["existing-config-map"])
    assert not by_kind(objects, "ConfigMap")
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "my-gateway-config"}} in volumes


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"redis": {"mode": "standalone"}}, "redis.mode=standalone needs redis.url"),
        ({"redis": {"mode": "sentinel"}}, "redis.mode=sentinel needs redis.sentinels"),
        ({"redis": {"mode": "cluster"}}, "redis.mode=cluster needs redis.clusterNodes"),
        ({"redis": {"mode": "memcached"}}, "/redis/mode"),
        ({"redis": {"url": "http://redis"}}, "/redis/url"),
        ({"tracing": {"enabled": True}}, "tracing.enabled needs tracing.endpoint"),
        ({"secrets": {"existingSecret": "k"}, "database": {"url": "postgresql://d/b"}},
         "put GLM_GATEWAY_DATABASE_URL in that Secret"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}, "maxReplicas is below"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_naming_them(values: dict[str, Any], says: str) -> None:
    with pytest.raises(helm_python.HelmError) as caught:
        render(values)
    assert says in str(caught.value)


def test_helm_lint_finds_no_error() -> None:
    result = helm_python.lint(str(CHART))
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []


def test_helm_v3_binary_agrees() -> None:
    helm = tool("helm")
    lint = subprocess.run(
        [helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for name in ("defaults", "redis-url-postgres-tracing-monitor", "cluster-fixed-replicas"):
        values = yaml.safe_dump(VALUE_SETS[name])
        run = subprocess.run(
            [helm, "template", RELEASE, str(CHART), "--namespace", "llm", "-f", "-"],
            input=values, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        theirs = [d for d in yaml.safe_load_all(run.stdout) if d]
        key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
        assert sorted(theirs, key=key) == sorted(render(VALUE_SETS[name]), key=key), name
