"""Print the part of requirements/lock.txt that the gateway needs at run time, hashes kept.

The lock pins everything the project installs (runtime, the `dev` and `litellm` extras, pip and
setuptools). An image needs only the runtime closure: the packages named in pyproject.toml's
`[project].dependencies` (plus any extras asked for), and everything the lock says they pull in
(its `# via` lines give each package's parents). The output installs with
`pip install --require-hashes --no-deps -r`, so every file is still checked against its hash.

    python deploy/docker/runtime-requirements.py                 # the runtime closure
    python deploy/docker/runtime-requirements.py --extras litellm
    python deploy/docker/runtime-requirements.py --only setuptools

Standard library only (it runs in the image's build stage before anything is installed).
Exits 2 naming the package when a requested one is not in the lock.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==")
REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of `-_.` as one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """(pin lines with their hashes by package, parents by package) from a uv lock."""
    blocks: dict[str, list[str]] = {}
    parents: dict[str, set[str]] = {}
    current: str | None = None
    in_via = False
    for line in text.splitlines():
        pin = PIN.match(line)
        if pin:
            current = normalize(pin.group(1))
            blocks[current] = [line]
            parents[current] = set()
            in_via = False
        elif current is None or not line.startswith("    "):
            current = None
        elif line.lstrip().startswith("--hash="):
            blocks[current].append(line)
        elif line.strip().startswith("# via"):
            rest = line.strip()[len("# via") :].strip()
            in_via = not rest
            if rest:
                parents[current].add(rest)
        elif in_via and line.strip().startswith("#"):
            parents[current].add(line.strip().lstrip("#").strip())
    for pkg, names in parents.items():
        parents[pkg] = {normalize(n) for n in names if " " not in n and not n.startswith("-")}
    return blocks, parents


def roots(pyproject: Path, extras: list[str]) -> list[str]:
    """Normalized names of the runtime dependencies and of the extras asked for."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"runtime-requirements: no extra {extra!r} in {pyproject}")
        reqs += optional[extra]
    found = (REQ_NAME.match(r) for r in reqs)
    return [normalize(m.group(1)) for m in found if m]


def closure(start: list[str], parents: dict[str, set[str]]) -> set[str]:
    """Every package reachable from ``start`` through the lock's parent links."""
    children: dict[str, set[str]] = {}
    for pkg, ps in parents.items():
        for p in ps:
            children.setdefault(p, set()).add(pkg)
    seen: set[str] = set()
    todo = list(start)
    while todo:
        pkg = todo.pop()
        if pkg not in seen:
            seen.add(pkg)
            todo.extend(children.get(pkg, ()))
    return seen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lock", type=Path, default=ROOT / "requirements" / "lock.txt")
    ap.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    ap.add_argument("--extras", default="", help="comma-separated extras to include")
    ap.add_argument("--only", default="", help="comma-separated packages, without their deps")
    args = ap.parse_args(argv)
    blocks, parents = parse_lock(args.lock.read_text())
    if args.only:
        wanted = {normalize(n) for n in args.only.split(",") if n.strip()}
    else:
        extras = [e.strip() for e in args.extras.split(",") if e.strip()]
        wanted = closure(roots(args.pyproject, extras), parents)
    missing = sorted(wanted - blocks.keys())
    if missing:
        print(f"runtime-requirements: not in {args.lock}: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(f"# generated from {args.lock.name} by deploy/docker/runtime-requirements.py")
    for name in sorted(wanted):
        print("\n".join(blocks[name]).rstrip(" \\"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
