#!/usr/bin/env bash
# Starts/stops the Kafka-compatible broker tansu on a free loopback port.
#   kafka.sh start DIR [memory|sqlite]   writes KAFKA_BOOTSTRAP_SERVERS to DIR/env
#   kafka.sh stop DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${DHBUS_CACHE_DIR:-$HOME/.cache/dhbus}"
TANSU_VERSION="${DHBUS_TANSU_VERSION:-0.6.0}"
tansu="$CACHE/tansu-$TANSU_VERSION/bin/tansu"
cmd="${1:?usage: kafka.sh start|stop DIR}"; dir="${2:?state directory required}"
storage="${3:-sqlite}"
mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
log() { printf '[kafka] %s\n' "$*" >&2; }

case "$cmd" in
start)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then log "already running"; exit 0; fi
  bash "$here/install-stack.sh" tansu
  port="$( [ -f "$dir/port" ] && cat "$dir/port" || python3 "$here/free_port.py")"
  echo "$port" > "$dir/port"
  case "$storage" in
    memory) engine="memory://tansu/" ;;
    # sqlite keeps topics across broker restarts (the restart tests need that).
    sqlite) engine="sqlite://tansu.db" ;;  # resolved against the cwd (DIR)
    *) log "unknown storage $storage"; exit 2 ;;
  esac
  cd "$dir"
  setsid "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$engine" > "$dir/broker.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; then break; fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { log "broker exited"; tail -30 "$dir/broker.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$port" > "$dir/env"
  log "ready on 127.0.0.1:$port ($storage storage, pid $(cat "$dir/pid"))"
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid="$(cat "$dir/pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    log "stopped"
  fi
  ;;
*) log "unknown command $cmd"; exit 2 ;;
esac
