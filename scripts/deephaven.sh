#!/usr/bin/env bash
# Starts/stops one Deephaven server (PyPI deephaven-server, PSK auth) on a free
# loopback port. State (pid, port, key, log, data) lives in DIR.
#   deephaven.sh start DIR [EXTRA_JVM_ARG ...]   prints DEEPHAVEN_* exports to DIR/env
#   deephaven.sh stop DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${DHBUS_CACHE_DIR:-$HOME/.cache/dhbus}"
DH_VERSION="${DHBUS_DEEPHAVEN_VERSION:-42.7}"
venv="$CACHE/venv-deephaven-$DH_VERSION"
cmd="${1:?usage: deephaven.sh start|stop DIR}"; dir="${2:?state directory required}"; shift 2
mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
log() { printf '[deephaven] %s\n' "$*" >&2; }

case "$cmd" in
start)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then log "already running (pid $(cat "$dir/pid"))"; exit 0; fi
  bash "$here/install-stack.sh" deephaven
  # A restart in the same DIR keeps the port and key, so clients reconnect to the same address.
  if [ -f "$dir/env" ]; then
    port="$(sed -n 's/^export DEEPHAVEN_PORT=//p' "$dir/env")"
    key="$(sed -n 's/^export DEEPHAVEN_API_TOKEN=//p' "$dir/env")"
  fi
  port="${port:-${DEEPHAVEN_PORT_WANTED:-$(python3 "$here/free_port.py")}}"
  key="${key:-${DHBUS_TEST_PSK:-dhbus-$(python3 -c 'import secrets; print(secrets.token_hex(12))')}}"
  mkdir -p "$dir/data"
  heap="${DHBUS_DEEPHAVEN_HEAP:-3g}"
  (
    cd "$dir/data"
    # -Dbarrage.minUpdateInterval: Barrage updates every 50 ms instead of 1 s (write→subscriber latency).
    # -DPeriodicUpdateGraph.targetCycleDurationMillis: 100 ms update cycles.
    # PSK auth: the same handler production uses, so auth paths are tested for real.
    # -Ddeephaven.console.type=python: bootstrap's scripts are Python.
    exec setsid "$venv/bin/python" "$here/run_deephaven.py" 127.0.0.1 "$port" \
      "-Xmx$heap" -Dbarrage.minUpdateInterval=50 \
      -DPeriodicUpdateGraph.targetCycleDurationMillis=100 \
      -DAuthHandlers=io.deephaven.authentication.psk.PskAuthenticationHandler \
      "-Dauthentication.psk=$key" \
      -Ddeephaven.console.type=python \
      "-Ddeephaven.dataDir=$dir/data" \
      "$@" > "$dir/server.log" 2>&1
  ) &
  echo $! > "$dir/pid"
  for _ in $(seq 1 240); do
    if grep -q "deephaven ready" "$dir/server.log" 2>/dev/null; then break; fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then log "server exited; log follows"; tail -50 "$dir/server.log" >&2; exit 1; fi
    sleep 0.5
  done
  grep -q "deephaven ready" "$dir/server.log" || { log "server not ready after 120 s"; tail -50 "$dir/server.log" >&2; exit 1; }
  cat > "$dir/env" <<ENV
export DEEPHAVEN_HOST=127.0.0.1
export DEEPHAVEN_PORT=$port
export DEEPHAVEN_API_TOKEN=$key
export DEEPHAVEN_USE_TLS=0
ENV
  log "ready on 127.0.0.1:$port (pid $(cat "$dir/pid"), log $dir/server.log)"
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid="$(cat "$dir/pid")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    log "stopped"
  fi
  ;;
*) log "unknown command $cmd"; exit 2 ;;
esac
