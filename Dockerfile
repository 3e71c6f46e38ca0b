# syntax=docker/dockerfile:1
#
# dhbus container image: `docker build -t dhbus:local .`
#
#   docker run --rm dhbus:local --help
#   docker run --rm -e DEEPHAVEN_HOST=... -e DEEPHAVEN_API_TOKEN=... dhbus:local health
#
# Two stages: a Rust toolchain builds the binary (librdkafka is compiled from
# source by the rdkafka crate; protoc comes vendored with protoc-bin-vendored),
# and a slim Debian runtime carries only the binary and the shared libraries it
# links (glibc, OpenSSL 3, zlib).

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# librdkafka is built by rdkafka-sys with its ./configure + make: a C toolchain,
# pkg-config, OpenSSL headers (feature "ssl") and zlib headers (feature "libz").
# zstd is compiled from source by zstd-sys. No cmake and no system protoc needed.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        build-essential \
        pkg-config \
        libssl-dev \
        zlib1g-dev \
        ; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# Cache mounts keep the crate registry and the target directory between builds
# (BuildKit). --locked: the image is built from exactly Cargo.lock.
# The release profile keeps line tables (debug = 1); only the DWARF debug
# sections are stripped so the image stays small while panics and backtraces
# still name functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    set -eux; \
    cargo build --release --locked --bin dhbus; \
    install -D -m 0755 target/release/dhbus /out/dhbus; \
    strip --strip-debug /out/dhbus; \
    /out/dhbus --version

# ---------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: TLS to Deephaven (DEEPHAVEN_USE_TLS=1) and to Kafka (SASL_SSL/SSL).
# libssl3: OpenSSL, linked by librdkafka.
# curl: the HEALTHCHECK below. `dhbus health` was the alternative, but it is a
#   dependency probe, not a liveness probe: every run logs in to Deephaven, writes
#   a probe row and streams it back, which is the wrong load to put on the server
#   every few seconds, and it reports "unhealthy" for an outage of Deephaven that
#   the running process rides out by itself. /healthz answers from the process
#   alone; curl costs a few MB.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        ca-certificates \
        libssl3 \
        curl \
        ; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 dhbus; \
    useradd --system --uid 10001 --gid dhbus --home-dir /var/lib/dhbus --shell /usr/sbin/nologin dhbus; \
    install -d -o dhbus -g dhbus -m 0750 /var/lib/dhbus

COPY --from=builder /out/dhbus /usr/local/bin/dhbus

# In a container the bus and the operator endpoint must listen on every
# interface (the binary's defaults are loopback only). Clients inside the
# container still reach the bus at the default DHBUS_ADDR (127.0.0.1:50051).
ENV DHBUS_LISTEN=0.0.0.0:50051 \
    DHBUS_METRICS_LISTEN=0.0.0.0:9464 \
    RUST_LOG=info

# 50051: bus gRPC API. 9464: /metrics, /healthz, /readyz.
EXPOSE 50051 9464

# Writable working directory for files such as `replay --skip-corrupt FILE`.
WORKDIR /var/lib/dhbus
# Numeric user so that runAsNonRoot-style checks can verify it without /etc/passwd.
USER 10001:10001

# Liveness of `dhbus run`: the port is taken from DHBUS_METRICS_LISTEN at check
# time, so overriding the variable keeps the check right. (Readiness of the
# dependencies is /readyz; docker-compose.yml checks that one.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${DHBUS_METRICS_LISTEN##*:}/healthz" || exit 1

# dhbus handles SIGTERM/SIGINT itself (drains the sequencer, closes sessions)
# and starts no child processes, so it can run as PID 1 without an init.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dhbus"]
CMD ["run"]
