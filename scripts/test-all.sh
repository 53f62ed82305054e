#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit, property and system tests against real peers.
# Installs what it needs (Debian packages) when missing, and starts throwaway Redis and PostgreSQL
# servers when none is reachable. Safe to run on a fresh machine and again on a warm one.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/callcenter-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
WORK="$(mktemp -d)"
cleanup() {
  if [ -n "${STARTED_REDIS_PORT:-}" ]; then redis-cli -p "$STARTED_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; fi
  if [ -n "${STARTED_PG_DIR:-}" ]; then runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STARTED_PG_DIR" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- Debian packages the tests drive -----------------------------------------------------------
need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v baresip >/dev/null || need+=(baresip)
command -v kamailio >/dev/null || need+=(kamailio)
command -v redis-server >/dev/null || need+=(redis-server)
# The Sentinel failover tests (state-store, routing) skip without it: install it so they run.
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v sox >/dev/null || need+=(sox)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v curl >/dev/null || need+=(curl)
python3 -c "import ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
# A Chinese font, so zh-CN pages render in Chromium's screenshots.
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- PJSIP (the pjsua2 Python binding from PyPI) for the interop tests -----------------------------
if [ -z "${PJSUA_PYTHON:-}" ]; then
  PJSUA_VENV="${PJSUA_VENV:-$HOME/.cache/callcenter-pjsua}"
  if ! "$PJSUA_VENV/bin/python" -c 'import pjsua2' >/dev/null 2>&1; then
    echo "installing pjsua2-python into $PJSUA_VENV"
    python3 -m venv "$PJSUA_VENV"
    "$PJSUA_VENV/bin/pip" install -q 'pjsua2-python==2.15.1.post1'
  fi
  export PJSUA_PYTHON="$PJSUA_VENV/bin/python"
fi

# --- SIPVicious (PyPI) for the attacker's probes in tests/sipvicious.rs -----------------------------
if [ -z "${SIPVICIOUS_BIN:-}" ]; then
  SIPVICIOUS_VENV="${SIPVICIOUS_VENV:-$HOME/.cache/callcenter-sipvicious}"
  if ! [ -x "$SIPVICIOUS_VENV/bin/sipvicious_svcrack" ]; then
    echo "installing sipvicious into $SIPVICIOUS_VENV"
    python3 -m venv "$SIPVICIOUS_VENV"
    "$SIPVICIOUS_VENV/bin/pip" install -q 'sipvicious==0.3.8'
  fi
  export SIPVICIOUS_BIN="$SIPVICIOUS_VENV/bin"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- Redis ----------------------------------------------------------------------------------------
if [ -z "${REDIS_URL:-}" ]; then
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    export REDIS_URL="redis://127.0.0.1:6379/"
  else
    STARTED_REDIS_PORT="$(free_port)"
    redis-server --port "$STARTED_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --dir "$WORK" --logfile "$WORK/redis.log"
    for _ in $(seq 50); do redis-cli -p "$STARTED_REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    export REDIS_URL="redis://127.0.0.1:$STARTED_REDIS_PORT/"
  fi
fi

# --- PostgreSQL -----------------------------------------------------------------------------------
if [ -z "${DATABASE_URL:-}" ]; then
  if psql "postgres://postgres@127.0.0.1:5432/test" -tAc 'select 1' >/dev/null 2>&1; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/test"
  else
    PG_BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
    STARTED_PG_DIR="$WORK/pg"
    port="$(free_port)"
    mkdir -p "$STARTED_PG_DIR" && chown postgres "$WORK" "$STARTED_PG_DIR"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$STARTED_PG_DIR" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STARTED_PG_DIR" -o "-p $port -k $STARTED_PG_DIR -c listen_addresses=127.0.0.1" -w start >/dev/null
    runuser -u postgres -- psql -h 127.0.0.1 -p "$port" -U postgres -c 'create database test' >/dev/null
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/test"
  fi
fi
echo "REDIS_URL=$REDIS_URL DATABASE_URL=$DATABASE_URL"

# --- Build, lint, test ----------------------------------------------------------------------------
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# System tests run the real binary; build it first.
cargo build --workspace --bins --quiet

# --- deploy/: compose, Kubernetes, Prometheus, systemd and Kamailio files checked by their own tools --
deploy/check.sh

cargo test --workspace --quiet 2>&1 | tee "$WORK/test.log"
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f; exit (f > 0) }' "$WORK/test.log"
