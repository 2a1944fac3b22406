"""The config the Kubernetes base and the Helm chart ship is the repository's config
(deploy/config-sync.py keeps the copies; it is the one place naming the source)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.deploy.k8s import CONFIG_SOURCE, config_sync
from tests.support.procs import ROOT


def test_the_copies_match_the_source() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "config-sync.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in CONFIG_SOURCE.glob("*.yaml")) == [
        "gateway.yaml", "models.yaml", "providers.yaml",
    ]  # fmt: skip


def test_a_stale_copy_is_named_and_sync_mends_it(tmp_path: Path) -> None:
    sync = config_sync()
    sync.SOURCE = tmp_path / "config"
    sync.COPIES = (tmp_path / "k8s", tmp_path / "helm")
    sync.ROOT = tmp_path
    sync.SOURCE.mkdir()
    (sync.SOURCE / "gateway.yaml").write_text("server: {}\n")
    (sync.SOURCE / "models.yaml").write_text("variants: []\n")
    assert sync.main([]) == 0
    (tmp_path / "k8s" / "gateway.yaml").write_text("server: {port: 1}\n")
    (tmp_path / "helm" / "old.yaml").write_text("x: 1\n")
    (tmp_path / "helm" / "models.yaml").unlink()
    assert sync.differences() == [
        "k8s/gateway.yaml: differs",
        "helm/models.yaml: missing",
        "helm/old.yaml: not in config/",
    ]
    assert sync.main(["--check"]) == 1
    assert sync.main([]) == 0 and sync.differences() == []
    assert not (tmp_path / "helm" / "old.yaml").exists()
