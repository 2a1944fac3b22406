"""Offline checks of rendered Kubernetes objects, shared by the kustomize and Helm tests.

Built-in kinds are validated against the Kubernetes OpenAPI schemas that PyPI's
`kubernetes-validate` ships, in strict mode (an unknown field is an error), for the oldest and
the newest Kubernetes versions we claim. ServiceMonitor is a prometheus-operator CRD those
schemas do not have: it is validated with the models generated from the operator's CRDs
(`cloudcoil-models-prometheus-operator`: required fields, types, patterns such as durations), and
a field the model does not know (pydantic would drop it silently) is reported too.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.procs import ROOT

TOOLS = ROOT / "tests" / "deploy" / ".tools"


def config_sync() -> ModuleType:
    """deploy/config-sync.py as a module: its SOURCE is where the shipped config lives."""
    spec = importlib.util.spec_from_file_location("config_sync", ROOT / "deploy" / "config-sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG_SOURCE: Path = config_sync().SOURCE
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
"""The oldest Kubernetes the manifests are meant for, and the newest the schemas know."""


def tool(name: str) -> str:
    """Path of kubectl or helm: tests/deploy/.tools first (pinned), then PATH; else skip."""
    pinned = TOOLS / name
    if pinned.exists():
        return str(pinned)
    found = shutil.which(name)
    if found:
        return found
    pytest.skip(f"{name} not found: run `bash tests/deploy/get-k8s-tools.sh` (make test does)")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIR` renders (offline: it reads only the folder)."""
    run = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"kubectl kustomize {directory}: {run.stderr}"
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def _unknown_fields(given: Any, kept: Any, path: str) -> list[str]:
    """Keys of ``given`` that the validated model did not keep."""
    if isinstance(given, dict) and isinstance(kept, dict):
        out = [f"{path}.{k}" for k in given if k not in kept]
        for k in given.keys() & kept.keys():
            out += _unknown_fields(given[k], kept[k], f"{path}.{k}")
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [
            p
            for i, (g, k) in enumerate(zip(given, kept, strict=False))
            for p in _unknown_fields(g, k, f"{path}[{i}]")
        ]
    return []


def servicemonitor_problems(obj: dict[str, Any]) -> list[str]:
    """Problems of a monitoring.coreos.com/v1 ServiceMonitor, checked against the CRD's models."""
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor
    from pydantic import ValidationError

    try:
        model = ServiceMonitor.model_validate(obj)
    except ValidationError as exc:
        return [f"ServiceMonitor/{obj['metadata'].get('name')}: {exc}"]
    kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = _unknown_fields(obj, kept, "")
    return [f"ServiceMonitor/{obj['metadata']['name']}: unknown field {u}" for u in unknown]


def problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every schema problem of ``objects``, one line each (empty when all are valid)."""
    out: list[str] = []
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("apiVersion") == "monitoring.coreos.com/v1" and obj["kind"] == "ServiceMonitor":
            out += servicemonitor_problems(obj)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                out.append(f"{name}: no schema for {obj.get('apiVersion')} in Kubernetes {version}")
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                out.append(f"{name} (Kubernetes {version}) at {where}: {exc.message}")
    return out


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def gateway_yaml_drain_s() -> float:
    """server.shutdown_grace_s + server.drain_timeout_s of the shipped gateway.yaml."""
    server = yaml.safe_load((CONFIG_SOURCE / "gateway.yaml").read_text())["server"]
    return float(server["shutdown_grace_s"]) + float(server["drain_timeout_s"])
