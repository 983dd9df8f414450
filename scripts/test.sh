#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every crate's tests against the real
# PostgreSQL at 127.0.0.1:5432 (each test makes its own database) and SQLite files
# in temp folders, and Kafka tests against Tansu brokers (installed on first
# use). `.ci/run` calls this script; so can you.
set -euo pipefail
cd "$(dirname "$0")/.."

export PARLEY_TEST_DATABASE_URL="${PARLEY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# The event-schema drift test rewrites the committed schemas when this is set:
# here it must only compare.
unset UPDATE_SCHEMAS

step() { printf '\n==> %s\n' "$*"; }

step "checking PostgreSQL at ${PARLEY_TEST_DATABASE_URL%%\?*}"
if command -v pg_isready >/dev/null 2>&1; then
  for _ in $(seq 1 30); do
    pg_isready -d "$PARLEY_TEST_DATABASE_URL" -q && break
    sleep 1
  done
  pg_isready -d "$PARLEY_TEST_DATABASE_URL" || {
    echo "PostgreSQL does not answer at $PARLEY_TEST_DATABASE_URL (set PARLEY_TEST_DATABASE_URL)" >&2
    exit 1
  }
fi

step "PostgreSQL server programs (private clusters for restore tests)"
# Tests that restore into a new cluster, stop a database or fail it over start
# their own with initdb/pg_ctl (never touching the server above);
# pg_dump/pg_restore move the data, pg_basebackup makes a standby.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends postgresql
fi
for program in pg_dump pg_restore pg_basebackup; do
  command -v "$program" >/dev/null 2>&1 || apt-get install -y --no-install-recommends postgresql-client
done

step "Kafka-compatible broker (Tansu) on 127.0.0.1:9092"
# Installs tansu once (about ten minutes), then starts it; tests that need a
# broker of their own start more from the same binary.
scripts/kafka-test-broker.sh
export PARLEY_KAFKA_TESTS=1
# The analyst's view is checked with a plain Python Kafka client.
python3 -c 'import confluent_kafka' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check confluent-kafka

step "deploy/: manifests, Compose file, alert rules, dashboard"
# No container engine here: render, validate and test what cannot run.
scripts/check-deploy.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "no test support in the server binary"
# event-log and kafka keep their test helpers (one drops old parley_test_%
# databases) behind a `testing` feature, and projections its crash failpoint
# behind `failpoints`: only dev-dependencies turn them on.
for crate in parley-event-log parley-kafka parley-projections; do
  if cargo tree --locked -p parley -e normal,features -i "$crate" | grep -qE '"(testing|failpoints)"'; then
    echo "the parley binary builds $crate with a test-only feature" >&2
    exit 1
  fi
done

step "cargo test"
# tests/metrics keeps one real /metrics scrape of each service here, for the
# dashboard check below.
scrapes="$(mktemp -d)"
trap 'rm -rf "$scrapes"' EXIT
PARLEY_METRICS_DUMP_DIR="$scrapes" cargo test --workspace --locked

step "every metric the dashboard and the alerts use is in a real scrape"
deploy/monitoring/check_dashboard.py --scrape "$scrapes"/*.prom

step "the HTTP contract, fuzzed: schemathesis against parley dev's OpenAPI document"
# Installs the PyPI package schemathesis when missing; about two minutes.
scripts/fuzz-contract.sh target/debug/parley

step "every benchmark once, at a tiny size (no figures asserted)"
cargo build --locked -p parley-bench
PARLEY_BENCH_ADMIN_URL="$PARLEY_TEST_DATABASE_URL" scripts/bench-smoke.sh target/debug/parley

step "an analyst's view: DuckDB reads both export formats and agrees"
# Installs the PyPI package duckdb when missing.
python3 scripts/check-exports.py --parley target/debug/parley
