#!/usr/bin/env bash
# API benchmark: wrk against GET /v1/jobs/{id} with a valid key (64
# connections, 30 s), beside a bare /healthz as the ceiling. PostgreSQL store
# in a scratch database that is dropped afterwards.
#
#   bench/api-wrk.sh [postgres://postgres@127.0.0.1:5432] [duration]
#
# Needs: wrk (Debian package), curl, psql, a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:-postgres://postgres@127.0.0.1:5432}
duration=${2:-30s}
db=longhaul_api_bench_$$
addr=127.0.0.1:18181
bin=${CARGO_TARGET_DIR:-target}/release/longhaul

psql "$server/postgres" -qc "CREATE DATABASE $db"
cleanup() {
  [ -n "${api_pid:-}" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db" || true
}
trap cleanup EXIT

export LONGHAUL_DATABASE_URL="$server/$db" LONGHAUL_API_ADDR=$addr LONGHAUL_LOG=warn LONGHAUL_DATABASE_MAX_CONNECTIONS=16
$bin migrate >/dev/null
key=$($bin admin create-tenant bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKey"])')
$bin api & api_pid=$!
for _ in $(seq 1 50); do curl -sf "http://$addr/healthz" >/dev/null && break; sleep 0.1; done
job=$(curl -sf -X POST "http://$addr/v1/jobs" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"kind":"system.noop"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

echo "== GET /v1/jobs/$job (valid key, 64 connections, $duration)"
wrk -t2 -c64 -d"$duration" --latency -H "Authorization: Bearer $key" "http://$addr/v1/jobs/$job"
echo "== GET /healthz (ceiling)"
wrk -t2 -c64 -d"$duration" --latency "http://$addr/healthz"
