#!/usr/bin/env bash
# Regenerates requirements/lock.txt: every pin of pyproject.toml's dependencies, its `dev` and
# `litellm` extras and requirements/lock.in, with the sha256 of every file PyPI serves for each
# pinned version (all platforms, all Pythons), so `pip install --require-hashes` works anywhere.
#
#   requirements/relock.sh                          # after editing pyproject.toml or lock.in
#   requirements/relock.sh --upgrade-package NAME   # move one pin (other uv options pass through)
#   requirements/relock.sh --tools                  # re-hash uv itself in relock-tools.txt
#
# The pins already in lock.txt are uv's preferences: a re-run changes no version that still
# fits, so the same inputs give the same file. Only PyPI is asked (no pip.conf, no uv.toml, no
# local mirror). The resolution is for Linux x86_64 CPython 3.11.0, the oldest the project
# supports (so redis's async-timeout, needed below 3.11.3, is in); resolving for aarch64 and
# for 3.12/3.13 gives the same pins or a subset. requirements/pip.txt is pip's entry, copied.
set -euo pipefail
cd "$(dirname "$0")/.."
# This machine's pip and uv settings (mirrors, find-links, constraints) must not shape the lock.
for var in $(compgen -e); do
  case "$var" in PIP_* | UV_*) unset "$var" ;; esac
done

index=https://pypi.org/simple
tools=${RELOCK_TOOLS_DIR:-${TMPDIR:-/tmp}/glm-gateway-relock-tools}
uv="$tools/bin/uv"
if [ ! -x "$uv" ]; then
  python3 -m venv "$tools"
  PIP_CONFIG_FILE=/dev/null "$tools/bin/pip" install -q --disable-pip-version-check \
    --index-url "$index" --require-hashes --no-deps -r requirements/relock-tools.txt
fi

if [ "${1:-}" = "--tools" ]; then
  shift
  body=$(echo "uv==$("$uv" --version | cut -d' ' -f2)" | "$uv" pip compile - --no-config \
    --index-url "$index" --generate-hashes --python-version 3.11 --no-header --quiet "$@")
  { echo '# relock.sh installs uv from this file with --require-hashes (regenerate: relock.sh --tools).'
    echo "$body"; } > requirements/relock-tools.txt
  exit 0
fi

out=requirements/lock.txt
body=$(mktemp)
trap 'rm -f "$body"' EXIT
# The existing lock without its comment header is uv's set of preferences.
[ -f "$out" ] && cp "$out" "$body"
"$uv" pip compile pyproject.toml requirements/lock.in \
  --extra dev --extra litellm \
  --no-config --index-url "$index" \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --generate-hashes --no-header --quiet \
  --output-file "$body" "$@"
{ cat <<'HEADER'
# Exact pins with the sha256 of every file PyPI serves for each version. Do not edit by hand:
# edit pyproject.toml (direct dependencies) or requirements/lock.in (pip, setuptools), then run
# requirements/relock.sh (uv, itself installed from relock-tools.txt by hash; existing pins are
# kept unless they no longer fit, or --upgrade-package NAME is given). Every install of this
# file uses --require-hashes (Makefile); tests/unit/test_lock.py checks each line is an `==`
# pin with at least one hash. Vulnerability check (needs the advisory databases' network):
# pip-audit -r requirements/lock.txt
HEADER
  cat "$body"; } > "$out"
# pip alone, installed first: Debian's pip 23.0 cannot take the whole lock in hash-checking
# mode (it asks for a separate pin of `httpx[http2]`, an extra).
{ echo "# pip's entry of lock.txt, installed before the rest (written by relock.sh)."
  awk '/^pip==/ {on = 1; print; next} on && /^ / {print; next} {on = 0}' "$out"; } \
  > requirements/pip.txt
