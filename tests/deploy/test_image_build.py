"""The Dockerfile's own build steps, run here without an engine, give a gateway that serves.

Each stage's COPY and RUN instructions are carried out in a temporary folder standing for the
image's filesystem (`/opt`, `/src`, `/tmp`, `/etc` moved under it, `python` being this machine's
CPython 3.11): the runtime closure of the lock installs with every hash checked, the wheel builds
from the copied files alone, `pip check` passes. Then the final stage's entrypoint and command run
from that virtualenv with the final stage's environment, answer a chat request, and its
HEALTHCHECK command passes. ~20 s: the installs are real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.test_dockerfile import env_of_final_stage, final, stages
from tests.support.procs import OUT, ROOT, free_port

pytestmark = pytest.mark.slow
IMAGE_PATHS = re.compile(r"(?<![\w./-])/(opt|src|tmp|etc)(?=[/\s]|$)")


def in_fs(fs: Path, text: str) -> str:
    """``text`` with the image's absolute paths moved under ``fs``."""
    return IMAGE_PATHS.sub(lambda m: f"{fs}/{m.group(1)}", text)


def build(fs: Path) -> None:
    """Carry out the build stages' WORKDIR, ARG, ENV, COPY and RUN under ``fs``, then the final
    stage's COPY (its RUN only adds the unprivileged user, which is not done on this machine)."""
    (fs / "tmp").mkdir(parents=True)
    *building, last = stages()
    assert [r.split()[0] for w, r in last if w == "RUN"] == ["groupadd"]
    for stage in [*building, [(w, r) for w, r in last if w == "COPY"]]:
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        workdir = fs
        for word, rest in stage:
            if word == "WORKDIR":
                workdir = Path(in_fs(fs, rest))
                workdir.mkdir(parents=True, exist_ok=True)
            elif word == "ARG" and "=" in rest and not rest.startswith("PYTHON_IMAGE"):
                name, value = rest.split("=", 1)
                env[name] = value.strip('"')
            elif word == "ENV":
                env.update(re.findall(r"(\w+)=(\S+)", rest))
            elif word == "COPY":
                copy(fs, workdir, rest)
            elif word == "RUN":
                script = re.sub(r"(^|&&\s*)python ", rf"\g<1>{sys.executable} ", in_fs(fs, rest))
                run = subprocess.run(
                    ["bash", "-c", script], cwd=workdir, env=env,
                    capture_output=True, text=True, timeout=300,
                )  # fmt: skip
                assert run.returncode == 0, f"RUN {rest}\n{run.stdout[-3000:]}{run.stderr[-3000:]}"


def copy(fs: Path, workdir: Path, args: str) -> None:
    """COPY [--from=stage] SRC... DEST: the build context is the repository (or ``fs``)."""
    words = args.split()
    context = ROOT
    if words[0].startswith("--from="):
        context, words = fs, words[1:]
    *sources, dest = words
    target = Path(in_fs(fs, dest)) if dest.startswith("/") else workdir / dest
    for src in sources:
        origin = Path(in_fs(fs, src)) if context is fs else ROOT / src
        if origin == target:  # one folder stands for both stages' filesystems
            continue
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        else:
            into_dir = dest.endswith("/") or len(sources) > 1
            path = target / origin.name if into_dir else target
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(origin, path)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the built gateway did not come up: {log.read_text()[-3000:]}")


def test_the_image_build_steps_give_a_gateway_that_serves(tmp_path: Path) -> None:
    fs = tmp_path / "fs"
    build(fs)
    env = {k: in_fs(fs, v) for k, v in env_of_final_stage().items() if k != "PATH"}
    venv_bin = fs / "opt" / "glm-gateway" / "bin"
    assert Path(env["GLM_GATEWAY_CONFIG_DIR"], "gateway.yaml").is_file()
    port = free_port()
    args = json.loads(final("ENTRYPOINT")) + json.loads(final("CMD"))
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    base = f"http://127.0.0.1:{port}"
    env["GLM_GATEWAY_HEALTH_URL"] = base + "/healthz"
    full_env = {**os.environ, **env, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"image-build-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv_bin / args[0]), *args[1:], "--demo"], env=full_env, cwd=tmp_path,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_healthy(base + "/healthz", proc, log)
            body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
            req = urllib.request.Request(
                base + "/v1/chat/completions", data=body.encode(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200 and json.loads(r.read())["choices"][0]["message"]["content"]
            check = json.loads(final("HEALTHCHECK").split(" CMD ", 1)[1])
            health = subprocess.run(check, env=full_env, capture_output=True, timeout=30)
            assert health.returncode == 0, health.stderr
        finally:
            proc.terminate()
            proc.wait(60)
    assert proc.returncode == 0  # SIGTERM: drained and exited cleanly
