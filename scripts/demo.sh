#!/usr/bin/env bash
# The main job on the local stack: installs (cached) and starts Deephaven and
# the Kafka-compatible broker, builds dhbus, bootstraps the canonical tables
# and checks health. Leaves the stack running; `scripts/stack.sh stop` ends it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
cargo build --release --locked --bin dhbus
bash "$here/stack.sh" start
# shellcheck disable=SC1091
source .stack/local/env
bin=target/release/dhbus
"$bin" bootstrap
"$bin" health
cat <<MSG

dhbus local stack is up:
  Deephaven    http://$DEEPHAVEN_HOST:$DEEPHAVEN_PORT/ide/   (PSK: $DEEPHAVEN_API_TOKEN)
  Kafka        $KAFKA_BOOTSTRAP_SERVERS
  settings     source .stack/local/env
  stop it      bash scripts/stack.sh stop
MSG
