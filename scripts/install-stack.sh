#!/usr/bin/env bash
# Installs the real services the tests and the local stack need, into a cache
# outside the work tree so that a second run (or a fresh clone) installs nothing:
#   - Deephaven: PyPI `deephaven-server` in a virtual environment (JDK 17 from the machine)
#   - Kafka-compatible broker: crates.io `tansu` with the dynostore and libsql features
set -euo pipefail
CACHE="${DHBUS_CACHE_DIR:-$HOME/.cache/dhbus}"
DH_VERSION="${DHBUS_DEEPHAVEN_VERSION:-42.7}"
TANSU_VERSION="${DHBUS_TANSU_VERSION:-0.6.0}"
mkdir -p "$CACHE"
log() { printf '[install-stack] %s\n' "$*" >&2; }

install_deephaven() {
  local venv="$CACHE/venv-deephaven-$DH_VERSION"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import deephaven_server' 2>/dev/null; then
    log "deephaven-server $DH_VERSION already installed in $venv"
    return
  fi
  command -v java >/dev/null || { log "JDK 17 is required (java not found)"; exit 1; }
  log "installing deephaven-server $DH_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "deephaven-server==$DH_VERSION"
  log "deephaven-server installed"
}

install_tansu() {
  local root="$CACHE/tansu-$TANSU_VERSION"
  if [ -x "$root/bin/tansu" ]; then
    log "tansu $TANSU_VERSION already installed in $root"
    return
  fi
  log "building tansu $TANSU_VERSION (about 11 minutes on two cores; cached afterwards)"
  cargo install --locked --quiet tansu --version "$TANSU_VERSION" \
    --features dynostore,libsql --root "$root"
  log "tansu installed"
}

case "${1:-all}" in
  deephaven) install_deephaven ;;
  tansu) install_tansu ;;
  all) install_deephaven; install_tansu ;;
  *) log "usage: $0 [all|deephaven|tansu]"; exit 2 ;;
esac
