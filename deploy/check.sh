#!/usr/bin/env bash
# Checks every file under deploy/ with a tool that understands it:
#   kamailio/kamailio.cfg        `kamailio -c` (as shipped, and with the defines compose and
#                                Kubernetes set); the system test tests/tests/deploy_kamailio.rs runs it
#   compose/compose.yaml         the Compose Specification's JSON schema (check-jsonschema's copy)
#   kubernetes/*.yaml            the Kubernetes API's JSON schemas, strict (kubernetes-validate)
#   prometheus/prometheus.yml    `promtool check config`
#   systemd/callcenter.service   `systemd-analyze verify` (any warning fails)
#   the node configurations      `callcenter check-config` with each container's environment
#   everything together          deploy/check.py (same nodes everywhere, drain times, datasources)
#   grafana/dashboards/*.json    also tests/tests/deploy_dashboard.rs (metric names a node exports)
# The tools come from PyPI (pinned, in a virtualenv) and Debian (promtool out of the prometheus
# package, unpacked, never installed as a service). Needs the callcenter binary: set
# CALLCENTER_BIN, or build it first (cargo build -p callcenter).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${CARGO_TARGET_DIR:-target}"
CALLCENTER="${CALLCENTER_BIN:-$TARGET/debug/callcenter}"
TOOLS="${DEPLOY_CHECK_TOOLS:-$TARGET/deploy-check-tools}"
KUBERNETES_VERSION=1.30.0
[ -x "$CALLCENTER" ] || { echo "no callcenter binary at $CALLCENTER (cargo build -p callcenter)" >&2; exit 1; }
mkdir -p "$TOOLS"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failed=0
step() { printf -- '--- %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; failed=1; }

# --- tools ----------------------------------------------------------------------------------------
VENV="$TOOLS/venv"
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/check-jsonschema" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    check-jsonschema==0.39.0 kubernetes-validate==1.37.0 jsonschema==4.26.0 pyyaml==6.0.3
fi
PROMTOOL="$(command -v promtool || true)"
if [ -z "$PROMTOOL" ]; then
  PROMTOOL="$TOOLS/prometheus/usr/bin/promtool"
  if [ ! -x "$PROMTOOL" ]; then
    (cd "$WORK" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; })
    dpkg-deb -x "$WORK"/prometheus_*.deb "$TOOLS/prometheus"
  fi
fi

# --- Kamailio ---------------------------------------------------------------------------------------
step "kamailio -c deploy/kamailio/kamailio.cfg"
for defines in "" "-A PUBLIC_ADDRESS=192.0.2.5:5060 -A WORKERS=2"; do
  # shellcheck disable=SC2086 # the defines are separate words
  if ! out="$(kamailio -c -f deploy/kamailio/kamailio.cfg -A "DS_LIST=\"$PWD/deploy/kamailio/dispatcher.list\"" $defines 2>&1)"; then
    echo "$out" | grep -v ' INFO: ' >&2
    fail "kamailio.cfg ${defines:-as shipped}"
  fi
done

# --- Compose ----------------------------------------------------------------------------------------
step "compose spec schema: deploy/compose/compose.yaml"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml || fail compose.yaml

# --- Kubernetes -------------------------------------------------------------------------------------
step "Kubernetes $KUBERNETES_VERSION schemas (strict): deploy/kubernetes/*.yaml"
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" deploy/kubernetes/*.yaml || fail kubernetes

# --- Prometheus -------------------------------------------------------------------------------------
step "promtool check config deploy/prometheus/prometheus.yml"
"$PROMTOOL" check config deploy/prometheus/prometheus.yml >/dev/null || fail prometheus.yml

# --- systemd ----------------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
  step "systemd-analyze verify deploy/systemd/callcenter.service"
  # The unit as installed, pointing at the binary built here.
  sed "s#/usr/local/bin/callcenter#$(realpath "$CALLCENTER")#" deploy/systemd/callcenter.service > "$WORK/callcenter.service"
  out="$(systemd-analyze verify "$WORK/callcenter.service" 2>&1)" || true
  if [ -n "$out" ]; then echo "$out" >&2; fail callcenter.service; fi
else
  step "systemd-analyze not installed: callcenter.service checked by check.py only"
fi

# --- Together ---------------------------------------------------------------------------------------
step "deploy/check.py: the files agree with each other and with callcenter check-config"
"$VENV/bin/python" deploy/check.py "$CALLCENTER" || fail check.py

if [ "$failed" != 0 ]; then
  echo "deploy/: checks failed" >&2
  exit 1
fi
echo "deploy/: every check passed"
