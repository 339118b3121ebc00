#!/usr/bin/env bash
# Schemathesis against a running longhaul API, on both stores: SQLite the way
# `longhaul dev` runs it (API, workers and scheduler in one process, its
# printed admin key), PostgreSQL through `longhaul api` and a `longhaul
# worker` on a fresh database (keys from `longhaul admin`; the worker ends the
# jobs the run creates, so their event streams end too). Every operation of /openapi.json gets a few
# generated requests (examples, coverage, fuzzing and stateful phases) with
# the checks `not_a_server_error` and `status_code_conformance`: any 5xx or
# undocumented status code fails the run (exit 1).
#
# Builds nothing: pass the binary, or it takes target/debug/longhaul under
# $CARGO_TARGET_DIR (or ./target).
#
#   tests/schemathesis.sh [path/to/longhaul]
#
# Environment: LONGHAUL_TEST_DATABASE_URL (postgres://user@host:port, default
# postgres://postgres@127.0.0.1:5432), SCHEMATHESIS_MAX_EXAMPLES (default 5),
# SCHEMATHESIS_SEED (default fixed, so a run is repeatable; set another to
# explore), SCHEMATHESIS_STORES (default "sqlite postgres").
set -euo pipefail

BIN=${1:-${CARGO_TARGET_DIR:-target}/debug/longhaul}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
PG_SERVER=${LONGHAUL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-5}
SEED=${SCHEMATHESIS_SEED:-20261202}
STORES=${SCHEMATHESIS_STORES:-sqlite postgres}

[ -x "$BIN" ] || { echo "schemathesis.sh: no longhaul binary at $BIN (cargo build --bin longhaul)" >&2; exit 2; }
command -v schemathesis >/dev/null || { echo "schemathesis.sh: schemathesis is not installed (pip install schemathesis)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/longhaul-schemathesis.XXXXXX")
SERVER_PIDS=()
PG_DATABASE=
cleanup() {
  stop_servers
  if [ -n "$PG_DATABASE" ]; then psql "$PG_SERVER/postgres" -qc "DROP DATABASE IF EXISTS $PG_DATABASE WITH (FORCE)" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

json_field() { # FILE KEY: a top-level string of a JSON file
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

wait_healthy() { # URL LOG
  for _ in $(seq 1 120); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1/healthz" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "${SERVER_PIDS[0]}" 2>/dev/null; then break; fi
    sleep 0.25
  done
  echo "schemathesis.sh: the API did not come up; its log:" >&2
  cat "$2" >&2
  return 1
}

# One schemathesis run; extra arguments select operations.
run_schemathesis() { # BASE KEY NAME ARGS...
  local base=$1 key=$2 name=$3; shift 3
  echo "-- schemathesis: $name"
  # From the scratch folder: schemathesis keeps a cache in ./.schemathesis.
  (cd "$WORK" && schemathesis run "$base/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance \
    --max-examples "$EXAMPLES" \
    --seed "$SEED" \
    --generation-with-security-parameters false \
    --generation-database none \
    --request-timeout 20 \
    --no-color \
    "$@")
}

# The operations of each run. The admin key runs every tenant operation but
# revoking keys; the operator key the operator's (tenants, metrics); revoking
# runs last, as it may revoke the key the runs use.
RUNS_PASSED=0
RUNS_FAILED=0
counted() { # COMMAND...: runs it, counting the run as passed or failed
  if "$@"; then RUNS_PASSED=$((RUNS_PASSED + 1)); return 0; fi
  RUNS_FAILED=$((RUNS_FAILED + 1))
  return 1
}

run_all() { # BASE ADMIN_KEY OPERATOR_KEY
  local base=$1 admin=$2 operator=$3 failed=0
  counted run_schemathesis "$base" "$admin" "tenant operations (admin key)" \
    --exclude-tag tenants --exclude-tag metrics --exclude-operation-id revokeApiKey || failed=1
  counted run_schemathesis "$base" "$operator" "operator operations (operator key)" \
    --include-tag tenants --include-tag metrics || failed=1
  counted run_schemathesis "$base" "$admin" "key revocation (admin key)" \
    --include-operation-id revokeApiKey || failed=1
  return $failed
}

stop_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  SERVER_PIDS=()
}

sqlite_run() {
  local dir=$WORK/sqlite port
  mkdir -p "$dir"
  port=$(free_port)
  export LONGHAUL_DATA_DIR=$dir LONGHAUL_DATABASE_URL=sqlite://$dir/longhaul.db \
    LONGHAUL_API_ADDR=127.0.0.1:$port LONGHAUL_LOG=warn
  "$BIN" migrate >/dev/null
  "$BIN" admin create-operator-key schemathesis >"$dir/operator.json"
  "$BIN" dev --concurrency 4 >"$dir/dev.log" 2>&1 &
  SERVER_PIDS=($!)
  wait_healthy "http://127.0.0.1:$port" "$dir/dev.log"
  local admin
  admin=$(sed -n 's/^ *API key *\(lh_[A-Za-z0-9_]*\).*/\1/p' "$dir/dev.log" | head -n 1)
  [ -n "$admin" ] || { echo "schemathesis.sh: no key in the dev output" >&2; cat "$dir/dev.log" >&2; return 1; }
  local failed=0
  run_all "http://127.0.0.1:$port" "$admin" "$(json_field "$dir/operator.json" apiKey)" || failed=1
  stop_servers
  if grep -n "panicked" "$dir/dev.log" >&2; then failed=1; fi
  return $failed
}

postgres_run() {
  local dir=$WORK/postgres port
  mkdir -p "$dir"
  port=$(free_port)
  PG_DATABASE=longhaul_schemathesis_$$
  psql "$PG_SERVER/postgres" -qc "CREATE DATABASE $PG_DATABASE" >/dev/null
  export LONGHAUL_DATA_DIR=$dir LONGHAUL_DATABASE_URL=$PG_SERVER/$PG_DATABASE \
    LONGHAUL_API_ADDR=127.0.0.1:$port LONGHAUL_LOG=warn
  "$BIN" migrate >/dev/null
  "$BIN" admin create-tenant schemathesis >"$dir/tenant.json"
  "$BIN" admin create-operator-key schemathesis >"$dir/operator.json"
  "$BIN" api >"$dir/api.log" 2>&1 &
  SERVER_PIDS=($!)
  "$BIN" worker --queues default,exports,scans --concurrency 4 >"$dir/worker.log" 2>&1 &
  SERVER_PIDS+=($!)
  wait_healthy "http://127.0.0.1:$port" "$dir/api.log"
  local failed=0
  run_all "http://127.0.0.1:$port" "$(json_field "$dir/tenant.json" apiKey)" \
    "$(json_field "$dir/operator.json" apiKey)" || failed=1
  stop_servers
  if grep -n "panicked" "$dir/api.log" "$dir/worker.log" >&2; then failed=1; fi
  return $failed
}

status=0
for store in $STORES; do
  echo "== schemathesis on $store ($("$BIN" --version 2>/dev/null || echo longhaul), schemathesis $(schemathesis --version | awk '{print $NF}'))"
  started=$SECONDS
  case $store in
    sqlite) sqlite_run || status=1 ;;
    postgres) postgres_run || status=1 ;;
    *) echo "schemathesis.sh: unknown store $store" >&2; status=1 ;;
  esac
  echo "== $store: $((SECONDS - started)) s"
done
# The plain closing line CI reads: schemathesis runs (3 per store).
echo "schemathesis: $RUNS_PASSED passed, $RUNS_FAILED failed"
if [ $status -ne 0 ]; then
  echo "schemathesis.sh: FAILED (a server error or an undocumented status code; see above)" >&2
fi
exit $status
