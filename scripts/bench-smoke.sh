#!/usr/bin/env bash
# Every benchmark once, at a tiny size, so that none rots unnoticed: each must
# set up, measure and clean up without an error. No figure is asserted (a
# debug build on a shared CI machine measures nothing worth comparing); the
# figures are in docs/benchmarks.md, from release builds.
#
# Usage: scripts/bench-smoke.sh [PARLEY_BINARY]   (default target/debug/parley;
# parley-bench is taken from beside it)
# Needs PostgreSQL (PARLEY_BENCH_ADMIN_URL) and, for relay, projectors and soak,
# the Kafka-compatible broker scripts/kafka-test-broker.sh starts.
set -euo pipefail
cd "$(dirname "$0")/.."
parley="$(realpath "${1:-target/debug/parley}")"
runner="$(dirname "$parley")/parley-bench"

bench() {
  echo "--> parley-bench $*"
  "$runner" --parley "$parley" "$@" >/dev/null
}

bench commands --clients 4 --rooms 4 --seconds 1 --warmup 0
bench rebuild --events 2000
bench queries --events 2000 --rooms 10 --connections 2 --seconds 1 --warmup 0
bench freshness --rate 20 --seconds 2
bench mixed --users 40 --rooms 8 --rooms-per-user 2 --messages-per-room 5 --connections 2 --rate 20 --seconds 1 --warmup 0 --pgbench-seconds 1
bench mixed --reads rooms --users 40 --rooms 8 --rooms-per-user 2 --messages-per-room 5 --connections 2 --rate 20 --seconds 1 --warmup 0 --pgbench-seconds 0
bench fanout --rooms 4 --members 5 --rate 10 --seconds 1 --reconnect 10
bench export --events 2000
bench relay --events 2000 --partitions 2
bench projectors --events 2000 --members 1,2 --partitions 2
# All warm-up: RSS and p99 are not judged (SKIP), errors and models are.
bench soak --seconds 20 --warmup-seconds 20 --rate 20 --users 4 --sse-clients 4 --partitions 2
