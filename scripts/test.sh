#!/usr/bin/env bash
# The whole test suite against the real services: installs (cached) and starts
# Deephaven and the Kafka-compatible broker on free loopback ports, runs every
# test with cargo-nextest, and stops the services whatever happens.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
state="$(mktemp -d "${TMPDIR:-/tmp}/dhbus-test.XXXXXX")"
cleanup() { bash "$here/stack.sh" stop "$state" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# Build first (the services are not needed for that), then start them.
(cd "$root" && cargo build --all-targets --locked)
bash "$here/stack.sh" start "$state"
# shellcheck disable=SC1091
source "$state/env"
export DHBUS_TEST_STATE="$state" DHBUS_SCRIPTS="$here"
cd "$root"
cargo nextest run --locked --no-fail-fast "$@"
