#!/usr/bin/env bash
# Installs the external programs some end-to-end tests use: a real Prometheus and a real
# AlertManager (Debian's `prometheus` and `prometheus-alertmanager`). Idempotent: does nothing
# but print the versions when both are already there. Never leaves a daemon running: the
# tests start their own instances on free loopback ports.
set -euo pipefail

PROMETHEUS_BIN=/usr/bin/prometheus
ALERTMANAGER_BIN=/usr/bin/prometheus-alertmanager
POLICY_RC=/usr/sbin/policy-rc.d

have() { [ -x "$1" ] || command -v "$(basename "$1")" >/dev/null 2>&1; }

if ! have "$PROMETHEUS_BIN" || ! have "$ALERTMANAGER_BIN"; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: need root to install prometheus and prometheus-alertmanager" >&2
    exit 1
  fi

  # Debian's maintainer scripts start the services through invoke-rc.d; a policy-rc.d that
  # exits 101 forbids that. Put one in place for the install unless the machine already has
  # one (Docker images do), and take only our own away afterwards.
  own_policy=0
  if [ ! -e "$POLICY_RC" ]; then
    printf '#!/bin/sh\n# temporary, from install-test-deps.sh\nexit 101\n' >"$POLICY_RC"
    chmod 0755 "$POLICY_RC"
    own_policy=1
  fi
  cleanup() {
    if [ "$own_policy" -eq 1 ]; then rm -f "$POLICY_RC"; fi
  }
  trap cleanup EXIT

  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    prometheus prometheus-alertmanager

  cleanup
  own_policy=0
  trap - EXIT
fi

# Belt and braces: should a package script have started a daemon anyway (no systemd here,
# but an init script might), stop the packaged services so ports 9090/9093 stay free.
for svc in prometheus prometheus-alertmanager; do
  if [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
    echo "install-test-deps: stopping $svc started by its package"
    "/etc/init.d/$svc" stop || true
  fi
done

echo "prometheus:              $(command -v prometheus)"
prometheus --version 2>&1 | head -n 1
echo "prometheus-alertmanager: $(command -v prometheus-alertmanager)"
prometheus-alertmanager --version 2>&1 | head -n 1
