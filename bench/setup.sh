#!/usr/bin/env bash
# Installs what bench/run.py --full needs. Idempotent: re-running skips what is there.
#   wrk, nginx         Debian packages (apt-get)
#   py-spy             into the project's .venv (profiling only)
#   granian            into the project's .venv (bench/servers.py only: server choice)
#   LiteLLM proxy      bench/.venv-litellm   (litellm[proxy]==$LITELLM_VERSION, fallback 1.108.7)
#   Portkey gateway    bench/.portkey        (@portkey-ai/gateway@$PORTKEY_VERSION with
#                                             @hono/node-server pinned to 1.14.1 via overrides)
# Usage: bash bench/setup.sh [--no-peers]      (--no-peers: wrk/nginx/py-spy/granian only)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
LITELLM_VERSION="${LITELLM_VERSION:-1.110.2}"
LITELLM_FALLBACK="1.108.7"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
HONO_NODE_SERVER="1.14.1"
PYSPY_VERSION="${PYSPY_VERSION:-0.4.1}"
GRANIAN_VERSION="2.8.9"
PEERS=1
[[ "${1:-}" == "--no-peers" ]] && PEERS=0

say() { printf 'bench/setup: %s\n' "$*" >&2; }
SUDO=""
[[ "$(id -u)" != 0 ]] && SUDO="sudo"

# --- Debian: wrk, nginx (nginx is run by bench/run.py with its own config; never as a service)
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx-light)
if ((${#need_apt[@]})); then
  say "apt-get install ${need_apt[*]}"
  LOCK=(-o DPkg::Lock::Timeout=600)  # other sessions may be installing at the same time
  $SUDO apt-get "${LOCK[@]}" update -qq
  # policy-rc.d 101: do not start the distribution's nginx service on install (only when no
  # policy is in place already; ours is removed again afterwards).
  OWN_POLICY=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    OWN_POLICY=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${LOCK[@]}" install -y -qq \
    --no-install-recommends "${need_apt[@]}" || rc=$?
  ((OWN_POLICY)) && $SUDO rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || exit "$rc"
fi
say "wrk: $(wrk -v 2>&1 | head -1 || true)"
say "nginx: $( (/usr/sbin/nginx -v || nginx -v) 2>&1 | head -1)"

# --- py-spy into the project venv (profiling)
PY="$ROOT/.venv/bin/python"
if [[ -x "$PY" ]] && ! "$PY" -m pip show py-spy >/dev/null 2>&1; then
  say "pip install py-spy==$PYSPY_VERSION into .venv"
  "$PY" -m pip install -q "py-spy==$PYSPY_VERSION"
fi
if [[ -x "$PY" ]] && ! "$PY" -m pip show granian >/dev/null 2>&1; then
  say "pip install granian==$GRANIAN_VERSION into .venv (bench/servers.py)"
  "$PY" -m pip install -q "granian==$GRANIAN_VERSION"
fi

((PEERS)) || exit 0

# --- LiteLLM proxy (its own venv: it pins versions the gateway does not), on the interpreter
# the project's .venv is built on, so that both Python proxies run on the same CPython build.
LV="$HERE/.venv-litellm"
BASE_PY=python3
if [[ -x "$PY" ]]; then
  BASE_PY="$("$PY" -c 'import sys; print(sys._base_executable)')"
fi
if [[ -x "$LV/bin/python" ]] &&
  [[ "$("$LV/bin/python" -c 'import sys; print(sys._base_executable)')" != "$BASE_PY" ]]; then
  say "$LV was built on another interpreter than .venv: rebuilding it on $BASE_PY"
  rm -rf "$LV"
fi
if [[ ! -x "$LV/bin/litellm" ]]; then
  say "LiteLLM proxy into $LV ($BASE_PY)"
  "$BASE_PY" -m venv "$LV"
  "$LV/bin/python" -m pip install -q --upgrade pip
  mkdir -p "$HERE/out"
  # 1.110.x's [proxy] extra needs the separate `litellm-proxy` distribution at the same
  # version; where the index lacks it the install fails and the fallback is used.
  if ! "$LV/bin/python" -m pip install -q "litellm[proxy]==$LITELLM_VERSION" \
    >"$HERE/out/setup-litellm.log" 2>&1; then
    say "litellm[proxy]==$LITELLM_VERSION failed ($(grep -m1 '^ERROR' "$HERE/out/setup-litellm.log"))"
    say "trying litellm[proxy]==$LITELLM_FALLBACK"
    "$LV/bin/python" -m pip install -q "litellm[proxy]==$LITELLM_FALLBACK"
  fi
fi
say "litellm: $("$LV/bin/python" -m pip show litellm 2>/dev/null | sed -n 's/^Version: //p')"

# --- Portkey gateway (npm), @hono/node-server pinned
PK="$HERE/.portkey"
if [[ ! -f "$PK/node_modules/@portkey-ai/gateway/package.json" ]]; then
  command -v npm >/dev/null || {
    say "npm missing: apt-get install nodejs npm"
    $SUDO apt-get install -y -qq nodejs npm
  }
  say "npm: available @portkey-ai/gateway versions: $(npm view @portkey-ai/gateway versions --json | tr -d '\n ')"
  mkdir -p "$PK"
  cat >"$PK/package.json" <<JSON
{
  "name": "glm-gateway-bench-portkey",
  "private": true,
  "dependencies": {
    "@portkey-ai/gateway": "$PORTKEY_VERSION",
    "@hono/node-server": "$HONO_NODE_SERVER"
  },
  "overrides": { "@hono/node-server": "$HONO_NODE_SERVER" }
}
JSON
  (cd "$PK" && npm install --no-audit --no-fund --loglevel=error)
fi
say "portkey: $(node -e "console.log(require('$PK/node_modules/@portkey-ai/gateway/package.json').version)") with @hono/node-server $(node -e "console.log(require('$PK/node_modules/@hono/node-server/package.json').version)")"
say "done"
