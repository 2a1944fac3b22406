"""``glm-gateway init DIR`` and ``glm-gateway check-config [DIR]``."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from gateway.catalogue.loader import default_config_dir
from gateway.cli import main

FILES = ["gateway.yaml", "models.yaml", "providers.yaml"]
KEY_VARS = [
    "ZAI_API_KEY", "BIGMODEL_API_KEY", "OPENROUTER_API_KEY", "TOGETHER_API_KEY",
    "FIREWORKS_API_KEY", "DEEPINFRA_API_KEY", "NOVITA_API_KEY", "SILICONFLOW_API_KEY",
    "AWS_ACCESS_KEY_ID", "GLM_GATEWAY_CONFIG_DIR", "GLM_GATEWAY_REDIS_URL",
]  # fmt: skip


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


def test_init_writes_the_packaged_config_and_says_what_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "conf"
    assert main(["init", str(dest)]) == 0
    out = capsys.readouterr().out
    for name in FILES:
        assert filecmp.cmp(dest / name, default_config_dir() / name, shallow=False)
        assert f"wrote {dest / name}" in out
    assert f"glm-gateway check-config {dest}" in out
    assert f"glm-gateway serve --config {dest}" in out


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "gateway.yaml").write_text("# mine\n")
    assert main(["init", str(tmp_path)]) == 1
    assert "already exists; nothing written (--force overwrites)" in capsys.readouterr().err
    assert (tmp_path / "gateway.yaml").read_text() == "# mine\n"
    assert not (tmp_path / "models.yaml").exists()
    assert main(["init", "--force", str(tmp_path)]) == 0
    assert (tmp_path / "gateway.yaml").read_text() != "# mine\n"


def test_check_config_summarises_a_valid_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["check-config", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"config OK: {tmp_path}\n")
    assert "variants: 16 (" in out and "providers: 10; deployments: " in out
    assert "keys not set (their deployments are skipped):" in out
    assert "    ZAI_API_KEY: zai" in out
    assert "client auth: on, master key not set" in out
    assert "records: state backend (no database" in out


def test_check_config_names_the_database_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLM_GATEWAY_DATABASE_URL", "postgresql://ops:s3cret-pw@db.internal/gw")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "records: PostgreSQL postgresql://ops@db.internal:5432/gw (keys and" in out
    assert "s3cret-pw" not in out


def test_check_config_without_a_directory_checks_the_packaged_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.startswith(f"config OK: {default_config_dir()}\n")


def test_check_config_names_every_problem_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    gw = tmp_path / "gateway.yaml"
    lines = gw.read_text().splitlines()
    port = next(i for i, line in enumerate(lines) if line.strip().startswith("port:"))
    lines[port] = lines[port].split(":")[0] + ": eighty"
    lines.insert(port + 1, lines[port].split("port")[0] + "hots: 127.0.0.1")
    gw.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["check-config", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("glm-gateway check-config: 2 problems:\n")
    assert f"  {gw}:{port + 1}: server.port: Input should be a valid integer" in err
    assert f"  {gw}:{port + 2}: server.hots: unknown key 'hots' (did you mean 'host'?" in err
