"""Copy the gateway's config folder into the Kubernetes base and the Helm chart, or check them.

kustomize's configMapGenerator and Helm's `.Files` read only files inside their own folder
(kustomize refuses `../../../config/...` unless every user passes `--load-restrictor
LoadRestrictionsNone`, and Helm has no such switch), so both carry a copy of the config. This
script is the one place that says where the source is; tests/deploy checks the copies match it
and that the Dockerfile and compose file use the same folder.

    python deploy/config-sync.py           # refresh the copies after editing the config
    python deploy/config-sync.py --check   # exit 1 naming every file that differs
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "gateway" / "config"
"""The config folder the deploy files ship (the one to re-point if it moves)."""
COPIES = (
    ROOT / "deploy" / "k8s" / "base" / "config",
    ROOT / "deploy" / "helm" / "glm-gateway" / "config",
)
PATTERN = "*.yaml"


def differences() -> list[str]:
    """One line per copy that is missing, stale or has a file the source does not."""
    want = {p.name: p.read_bytes() for p in sorted(SOURCE.glob(PATTERN))}
    out: list[str] = []
    for dest in COPIES:
        have = {p.name: p.read_bytes() for p in sorted(dest.glob(PATTERN))}
        rel = dest.relative_to(ROOT)
        out += [f"{rel}/{n}: missing" for n in sorted(want.keys() - have.keys())]
        out += [f"{rel}/{n}: not in {SOURCE.name}/" for n in sorted(have.keys() - want.keys())]
        out += [f"{rel}/{n}: differs" for n in sorted(want) if n in have and have[n] != want[n]]
    return out


def sync() -> None:
    """Make every copy equal to the source folder's YAML files."""
    for dest in COPIES:
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(PATTERN):
            if not (SOURCE / stale.name).exists():
                stale.unlink()
        for src in SOURCE.glob(PATTERN):
            shutil.copyfile(src, dest / src.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = ap.parse_args(argv)
    if not any(SOURCE.glob(PATTERN)):
        print(f"config-sync: no {PATTERN} in {SOURCE}", file=sys.stderr)
        return 2
    if args.check:
        diff = differences()
        for line in diff:
            print(f"config-sync: {line} (run: python deploy/config-sync.py)", file=sys.stderr)
        return 1 if diff else 0
    sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
