#!/usr/bin/env bash
# Load figures for the release build on this machine: reads of an existing
# state, writes to one state, and first accesses that each create a state, on
# SQLite and on Postgres (TEST_DATABASE_URL's server). Prints what wrk measured.
# Not part of CI. Needs Debian's wrk; DURATION and CONNECTIONS tune the run.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/onboarding-target}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
POSTGRES="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PORT="${PORT:-18765}"

cargo build --release --locked --quiet
bin="$CARGO_TARGET_DIR/release/onboarding"
export JWT_SECRET
JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
work="$(mktemp -d)"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
  psql "$POSTGRES" -qc 'drop database if exists onboarding_bench' 2>/dev/null || true
}
trap cleanup EXIT

run() {
  local name=$1 body=$2 fresh=${3:-0}
  echo "$name"
  TOKEN="$token" BODY="$body" FRESH_USERS="$fresh" \
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -s tests/bench/post.lua "http://127.0.0.1:$PORT/graphql" | grep 'req/s'
}

bench() {
  local label=$1 url=$2
  echo "== $label ($CONNECTIONS connections, $DURATION each, $(nproc) cores shared by server and wrk)"
  DATABASE_URL="$url" LISTEN_ADDR="127.0.0.1:$PORT" RUST_LOG=warn "$bin" serve &
  server=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
  token="$("$bin" token --sub bench-admin --role admin)"
  run "read an existing state" '{"query":"{ onboardingState { id isCompleted currentStep completedAt } }"}'
  run "write one state (setOnboardingStep)" '{"query":"mutation { setOnboardingStep(step: 3) { id currentStep updatedAt } }"}'
  run "first access, a new state each time" '{"query":"{ onboardingState(userId: \"{user}\") { id } }"}' 1
  kill "$server"; wait "$server" 2>/dev/null || true
  server=""
}

bench "SQLite" "sqlite://$work/bench.db"
if psql "$POSTGRES" -qc 'drop database if exists onboarding_bench' -c 'create database onboarding_bench' >/dev/null 2>&1; then
  bench "Postgres" "${POSTGRES%/*}/onboarding_bench"
else
  echo "== Postgres at $POSTGRES unreachable: not measured"
fi
