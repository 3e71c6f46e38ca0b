#!/usr/bin/env bash
# The main job on the local stack: installs (cached) and starts Deephaven and
# the broker, builds dhbus, bootstraps the tables, checks health, runs
# `dhbus run` with every component (bus, Kafka mirror, metrics roll-up) and a
# small demo workload of producers and consumers, then prints where to look.
# The stack and dhbus keep running; `bash scripts/demo.sh stop` ends them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
state="$root/.stack/local"
if [ "${1:-}" = "stop" ]; then
  [ -f "$state/dhbus.pid" ] && kill "$(cat "$state/dhbus.pid")" 2>/dev/null || true
  bash "$here/stack.sh" stop "$state"
  exit 0
fi
cargo build --release --locked --bin dhbus
bash "$here/stack.sh" start "$state"
# shellcheck disable=SC1091
source "$state/env"
export DEEPHAVEN_KAFKA_MIRROR_TOPIC="${DEEPHAVEN_KAFKA_MIRROR_TOPIC:-dhbus}"
export DHBUS_LISTEN="${DHBUS_LISTEN:-127.0.0.1:$(python3 "$here/free_port.py")}"
export DHBUS_METRICS_LISTEN="${DHBUS_METRICS_LISTEN:-127.0.0.1:$(python3 "$here/free_port.py")}"
export DHBUS_ADDR="http://$DHBUS_LISTEN"
bin="$root/target/release/dhbus"
"$bin" bootstrap
"$bin" health
[ -f "$state/dhbus.pid" ] && kill "$(cat "$state/dhbus.pid")" 2>/dev/null || true
"$bin" run > "$state/dhbus.log" 2>&1 &
echo $! > "$state/dhbus.pid"
for _ in $(seq 1 100); do
  curl -sf "http://$DHBUS_METRICS_LISTEN/readyz" >/dev/null 2>&1 && break
  sleep 0.3
done
curl -sf "http://$DHBUS_METRICS_LISTEN/readyz" || { echo "dhbus run is not ready; log: $state/dhbus.log" >&2; tail -20 "$state/dhbus.log" >&2; exit 1; }
echo
echo "[demo] 2 producers publish 500 messages each; 4 consumers ack them"
workers=()
for p in 1 2; do
  python3 - "$p" > "$state/demo-$p.jsonl" <<'PY'
import json, sys
p = int(sys.argv[1])
for i in range(500):
    print(json.dumps({"topic": "demo", "session_id": f"session-{i % 4}", "agent_id": f"producer-{p}",
                      "priority": i % 3, "payload_json": json.dumps({"step": i, "from": p})}))
PY
  "$bin" publish --jsonl "$state/demo-$p.jsonl" > "$state/published-$p.txt" &
  workers+=($!)
done
for c in 1 2 3 4; do
  "$bin" consume --topic demo --agent-id "consumer-$c" --ack --idle-exit-ms 3000 > "$state/consumed-$c.txt" &
  workers+=($!)
done
wait "${workers[@]}"
sleep 3
published=$(cat "$state"/published-*.txt | wc -l)
consumed=$(cat "$state"/consumed-*.txt | sort | uniq | wc -l)
echo "[demo] published $published, consumed $consumed distinct"
"$bin" replay --dry-run --tables agent_messages | tail -n +1 | head -20
cat <<MSG

dhbus is running on the local stack:
  Deephaven web console  http://$DEEPHAVEN_HOST:$DEEPHAVEN_PORT/ide/   (PSK: $DEEPHAVEN_API_TOKEN)
  bus API                $DHBUS_ADDR
  Prometheus metrics     http://$DHBUS_METRICS_LISTEN/metrics   (/healthz, /readyz)
  Kafka                  $KAFKA_BOOTSTRAP_SERVERS  topics $DEEPHAVEN_KAFKA_MIRROR_TOPIC.agent_messages, $DEEPHAVEN_KAFKA_MIRROR_TOPIC.agent_events
  dhbus log              $state/dhbus.log
  settings               source $state/env
  stop everything        bash scripts/demo.sh stop
MSG
