#!/usr/bin/env bash
# Installs the pinned Node clients the agent tests run (tests/agents/package-lock.json) into
# tests/agents/node_modules with `npm ci`: exact versions, every tarball checked against the
# lockfile's `integrity` hash (a changed artifact fails the install). Runs npm only when the
# lockfile changed since the last install (a stamp inside node_modules, which `npm ci` wipes),
# so it is quick when everything is there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stamp="$here/node_modules/.glm-lock.sha256"
want="$(sha256sum "$here/package-lock.json" "$here/package.json" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "tests/agents/install.sh: npm is not installed (Node 20+ with npm is needed for the agent tests)" >&2
  exit 1
fi
echo "installing the agent test clients (npm ci in tests/agents)" >&2
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
echo "$want" >"$stamp"
