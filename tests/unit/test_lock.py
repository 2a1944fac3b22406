"""requirements/lock.txt: exact pins, each with hashes, installed only with --require-hashes."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQS = ROOT / "requirements"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Each requirement of a pip requirements file: name -> (version, its --hash options).

    Raises AssertionError on any line that is not an exact `==` pin or a hash option.
    """
    text = path.read_text()
    logical = re.sub(r"\\\n", " ", text).splitlines()
    found: dict[str, tuple[str, list[str]]] = {}
    for raw in logical:
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        spec, *options = line.split()
        match = PIN.match(spec)
        assert match, f"{path.name}: not an exact `==` pin: {raw.strip()!r}"
        bad = [o for o in options if not HASH.match(o)]
        assert not bad, f"{path.name}: {spec}: options other than sha256 hashes: {bad}"
        name = canonical(match["name"])
        assert name not in found, f"{path.name}: {name} pinned twice"
        found[name] = (match["version"], options)
    return found


def direct_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    for line in (REQS / "lock.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            specs.append(line.split("#")[0].strip())
    pins: dict[str, str] = {}
    for spec in specs:
        name, sep, version = re.sub(r"\[.*?\]", "", spec).partition("==")
        assert sep, f"direct dependency not pinned with ==: {spec!r}"
        pins[canonical(name)] = version.strip()
    return pins


def test_every_lock_entry_is_an_exact_pin_with_hashes() -> None:
    lock = entries(REQS / "lock.txt")
    assert len(lock) > 50
    unhashed = [name for name, (_, hashes) in lock.items() if not hashes]
    assert not unhashed, f"entries without --hash: {unhashed}"


def test_direct_dependencies_are_locked_at_their_pins() -> None:
    lock = entries(REQS / "lock.txt")
    for name, version in direct_pins().items():
        assert name in lock, f"{name} is a direct dependency but not in lock.txt"
        locked = lock[name][0]
        assert locked == version, f"{name}: {version} in pyproject/lock.in, {locked} in lock.txt"


def test_pip_bootstrap_file_is_the_locks_pip_entry() -> None:
    assert entries(REQS / "pip.txt") == {"pip": entries(REQS / "lock.txt")["pip"]}


def test_make_install_checks_hashes_on_every_download() -> None:
    rule = (ROOT / "Makefile").read_text().split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    installs = [line.strip() for line in rule.splitlines() if "pip install" in line]
    assert len(installs) == 3, installs
    for line in installs:
        editable = "-e ." in line
        assert ("--require-hashes" in line) != editable, line
        if editable:  # the work tree itself: nothing may be fetched for it
            assert {"--no-index", "--no-build-isolation", "--no-deps"} <= set(line.split()), line
    assert "--upgrade" not in rule


def _wheel(directory: Path) -> Path:
    """A minimal, valid pure-Python wheel, made here so the check needs no network."""
    path = directory / "tamper_probe-1.0-py3-none-any.whl"
    files = {
        "tamper_probe.py": b"",
        "tamper_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tamper-probe\n"
        b"Version: 1.0\n",
        "tamper_probe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record += f"{name},sha256={digest.decode()},{len(data)}\n"
        record += "tamper_probe-1.0.dist-info/RECORD,,\n"
        zf.writestr("tamper_probe-1.0.dist-info/RECORD", record)
    return path


@pytest.mark.parametrize("tampered", [False, True])
def test_pip_refuses_a_file_whose_hash_differs(tmp_path: Path, tampered: bool) -> None:
    wheel = _wheel(tmp_path)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if tampered:
        digest = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    reqs = tmp_path / "lock.txt"
    reqs.write_text(f"tamper-probe==1.0 \\\n    --hash=sha256:{digest}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # this machine's pip.conf adds indexes and constraints
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--require-hashes", "--no-index",
         "--find-links", str(tmp_path), "--target", str(tmp_path / "site"), "-r", str(reqs)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    if tampered:
        assert result.returncode != 0
        assert "DO NOT MATCH THE HASHES" in result.stderr
        assert not (tmp_path / "site" / "tamper_probe.py").exists()
    else:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "site" / "tamper_probe.py").exists()
