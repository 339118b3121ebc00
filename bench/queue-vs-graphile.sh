#!/usr/bin/env bash
# The queue engine beside graphile-worker, in one run on one database server:
# each round runs graphile-worker's harness (../shared/peers/graphile-worker:
# bulk add_jobs, drain, idle latency; 20,000 no-op jobs, concurrency 24) and
# then `longhaul bench queue` with the same figures, so both see the same
# machine state. Prints one JSON line per measurement.
#
#   bench/queue-vs-graphile.sh <graphile-harness-dir> [rounds] [postgres://postgres@127.0.0.1:5432]
#
# The harness dir must have had `npm install` (copy the peer folder first).
# Needs: node, psql, a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${1:?the graphile-worker harness folder (with node_modules)}
rounds=${2:-3}
server=${3:-postgres://postgres@127.0.0.1:5432}
jobs=${JOBS:-20000}
concurrency=${CONCURRENCY:-24}
bin=${CARGO_TARGET_DIR:-target}/release/longhaul
peer_db=longhaul_peer_graphile_$$

psql "$server/postgres" -qc "CREATE DATABASE $peer_db"
trap 'psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $peer_db" || true' EXIT

for _ in $(seq 1 "$rounds"); do
  (cd "$harness" && DATABASE_URL="$server/$peer_db" node bench.js "$jobs" "$concurrency")
  LONGHAUL_LOG=warn $bin bench queue --database-url "$server/postgres" \
    --jobs "$jobs" --concurrency "$concurrency"
done
