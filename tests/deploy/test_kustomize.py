"""deploy/k8s: `kubectl kustomize` renders the base and the demo overlay offline, and every object
is valid for Kubernetes (tests/deploy/k8s.py says against what) and wired as intended."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import yaml

from tests.deploy.k8s import (
    CONFIG_SOURCE,
    by_kind,
    gateway_yaml_drain_s,
    kustomize,
    one,
    problems,
)
from tests.support.procs import ROOT

K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
DEMO = K8S / "overlays" / "demo"


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def demo() -> list[dict[str, Any]]:
    return kustomize(DEMO)


def gateway(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in by_kind(objects, "Deployment") if o["metadata"]["name"] == "glm-gateway")


def test_every_object_of_the_base_and_the_demo_is_valid(
    base: list[dict[str, Any]], demo: list[dict[str, Any]]
) -> None:
    kinds = {o["kind"] for o in base}
    assert kinds == {
        "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler",
        "ServiceMonitor",
    }  # fmt: skip
    assert problems(base) == []
    assert problems(demo) == []
    example = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    assert problems([example]) == []


def test_the_validation_finds_what_is_wrong(base: list[dict[str, Any]]) -> None:
    typo = copy.deepcopy(gateway(base))
    typo["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45  # strict: unknown
    found = problems([typo])
    assert found and all("terminationGracePeriodSecond" in p for p in found), found
    wrong_type = copy.deepcopy(gateway(base))
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    found = problems([wrong_type])
    assert found and all("containerPort" in p for p in found), found
    monitor = copy.deepcopy(one(base, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    found = problems([monitor])
    assert found and "interval" in found[0], found
    monitor["spec"]["endpoints"][0] = {"port": "http", "scrapeTimeut": "5s"}
    assert problems([monitor]) == [
        "ServiceMonitor/glm-gateway: unknown field .spec.endpoints[0].scrapeTimeut"
    ]


def test_the_pods_drain_within_their_grace_period(base: list[dict[str, Any]]) -> None:
    spec = gateway(base)["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= math.ceil(gateway_yaml_drain_s()) + 5
    c = spec["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["args"][:4] == ["--host", "0.0.0.0", "--port", "8080"]


def test_the_config_map_is_the_shipped_config_and_is_mounted(base: list[dict[str, Any]]) -> None:
    cm = one(base, "ConfigMap")
    shipped = {p.name: p.read_text() for p in CONFIG_SOURCE.glob("*.yaml")}
    assert cm["data"] == shipped
    pod = gateway(base)["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "config")
    assert vol["configMap"]["name"] == cm["metadata"]["name"]  # the hashed name
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config")
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert mount["mountPath"] == env["GLM_GATEWAY_CONFIG_DIR"] == "/etc/glm-gateway"


def test_service_pdb_hpa_and_monitor_select_the_gateway_pods(base: list[dict[str, Any]]) -> None:
    labels = gateway(base)["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    assert selects(one(base, "Service")["spec"]["selector"])
    assert selects(one(base, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    assert selects(one(base, "ServiceMonitor")["spec"]["selector"]["matchLabels"])
    service_labels = one(base, "Service")["metadata"]["labels"]
    monitor = one(base, "ServiceMonitor")["spec"]
    assert all(service_labels.get(k) == v for k, v in monitor["selector"]["matchLabels"].items())
    assert monitor["endpoints"][0]["port"] == one(base, "Service")["spec"]["ports"][0]["name"]
    hpa = one(base, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "glm-gateway" and hpa["minReplicas"] >= 2
    assert "replicas" not in gateway(base)["spec"]  # the HPA owns the count


def test_the_demo_runs_without_keys_on_shared_redis(demo: list[dict[str, Any]]) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in demo}
    assert ("Namespace", "glm-gateway-demo") in names
    assert not by_kind(demo, "ServiceMonitor")  # a laptop cluster has no prometheus-operator
    assert all(
        o["metadata"].get("namespace") == "glm-gateway-demo"
        for o in demo
        if o["kind"] != "Namespace"
    )
    pod = gateway(demo)["spec"]["template"]["spec"]
    secret = one(demo, "Secret")
    assert pod["containers"][0]["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    services = {o["metadata"]["name"]: o for o in by_kind(demo, "Service")}
    sim_arg = next(a for a in pod["containers"][0]["args"] if a.startswith("--simulator="))
    host, port = sim_arg.removeprefix("--simulator=http://").split(":")
    assert services[host]["spec"]["ports"][0]["port"] == int(port)
    import base64

    redis_url = base64.b64decode(secret["data"]["GLM_GATEWAY_REDIS_URL"]).decode()
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    assert services[host]["spec"]["ports"][0]["port"] == int(port)
    for deployment in by_kind(demo, "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            assert ":" in c["image"], (
                f"{deployment['metadata']['name']}: untagged image {c['image']}"
            )


def test_the_base_lists_every_config_file() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    files = kustomization["configMapGenerator"][0]["files"]
    assert sorted(files) == sorted(f"config/{p.name}" for p in CONFIG_SOURCE.glob("*.yaml"))
