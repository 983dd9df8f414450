#!/usr/bin/env bash
# Starts a Kafka-compatible broker (Tansu, from crates.io) on 127.0.0.1:9092 for
# tests and local runs, installing it first when it is missing (a one-time
# `cargo install` of about ten minutes on two cores). Idempotent: does nothing
# when a broker already answers on the address.
#
#   scripts/kafka-test-broker.sh          # start (or find) the broker
#   scripts/kafka-test-broker.sh stop     # stop the broker this script started
#
# Memory storage: the broker keeps nothing across restarts. Production uses
# Apache Kafka; Parley only speaks the Kafka protocol, so both work.
set -euo pipefail

addr="${PARLEY_KAFKA_ADDR:-127.0.0.1:9092}"
host="${addr%:*}"
port="${addr##*:}"
state="${TMPDIR:-/tmp}/parley-tansu"
mkdir -p "$state"

listening() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if [[ "${1:-start}" == "stop" ]]; then
  if [[ -f "$state/pid" ]] && kill "$(cat "$state/pid")" 2>/dev/null; then
    echo "stopped the broker on $addr"
  fi
  rm -f "$state/pid"
  exit 0
fi

if listening; then
  echo "a broker already answers on $addr"
  exit 0
fi

if ! command -v tansu >/dev/null 2>&1; then
  echo "installing tansu (cargo install, once) ..."
  cargo install tansu --locked --features dynostore,postgres
fi

nohup tansu broker \
  --listener-url "tcp://$addr" \
  --advertised-listener-url "tcp://$addr" \
  --storage-engine memory://tansu/ >"$state/broker.log" 2>&1 &
echo $! >"$state/pid"

for _ in $(seq 1 100); do
  if listening; then
    echo "tansu broker up on $addr (log: $state/broker.log)"
    exit 0
  fi
  sleep 0.1
done
echo "the broker did not come up on $addr; see $state/broker.log" >&2
exit 1
