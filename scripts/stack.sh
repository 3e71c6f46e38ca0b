#!/usr/bin/env bash
# The local stack: a Deephaven server and the Kafka-compatible broker, on free
# loopback ports, state under STATE (default .stack/local).
#   stack.sh start [STATE]   install (cached) and start both; writes STATE/env
#   stack.sh stop  [STATE]
#   stack.sh env   [STATE]   print the exports (eval "$(scripts/stack.sh env)")
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cmd="${1:-start}"
state="${2:-$root/.stack/local}"
case "$cmd" in
start)
  bash "$here/install-stack.sh" all
  bash "$here/deephaven.sh" start "$state/deephaven"
  bash "$here/kafka.sh" start "$state/kafka" "${DHBUS_KAFKA_STORAGE:-sqlite}"
  cat "$state/deephaven/env" "$state/kafka/env" > "$state/env"
  echo "[stack] ready; load the settings with: source $state/env" >&2
  ;;
stop)
  bash "$here/kafka.sh" stop "$state/kafka" || true
  bash "$here/deephaven.sh" stop "$state/deephaven" || true
  ;;
env) cat "$state/env" ;;
*) echo "usage: stack.sh start|stop|env [STATE]" >&2; exit 2 ;;
esac
