#!/usr/bin/env bash
# Benchmarks against the real services: starts Deephaven and the broker (like
# scripts/test.sh) and runs `cargo bench` (release). Each bench prints its
# figures and the machine. Usage: scripts/bench.sh [BENCH_NAME ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
state="$(mktemp -d "${TMPDIR:-/tmp}/dhbus-bench.XXXXXX")"
cleanup() { bash "$here/stack.sh" stop "$state" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
cd "$root"
cargo build --release --locked --benches --bin dhbus
# The broker keeps records in memory for benchmarks (sqlite storage, the tests'
# default, is tansu's durable toy backend and the bottleneck of every Kafka figure).
DHBUS_KAFKA_STORAGE="${DHBUS_KAFKA_STORAGE:-memory}" DHBUS_DEEPHAVEN_HEAP="${DHBUS_DEEPHAVEN_HEAP:-6g}" bash "$here/stack.sh" start "$state"
# shellcheck disable=SC1091
source "$state/env"
if [ "$#" -eq 0 ]; then set -- table_state deephaven_client bus mirror; fi
for b in "$@"; do
  cargo bench --locked --bench "$b"
done
