//! dhbus: a production message bus for fleets of AI agents on a Deephaven
//! server, made durable through Kafka.
//!
//! Module map (the folder layout is the architecture):
//!
//! - [`deephaven`]: a native client of the Deephaven server (sessions, input
//!   tables, DoPut/DoGet, filtered views, Barrage subscriptions). Knows nothing
//!   of agents or Kafka.
//! - [`schema`]: the canonical tables (`agent_messages`, `agent_events`,
//!   `agent_metrics`), loaded from `schemas/*.json`.
//! - [`bootstrap`]: idempotent creation of the canonical tables and drift checks.
//! - [`health`]: connectivity, auth, table presence and streaming round-trip checks.
//! - [`bus`]: the lease sequencer (pure state machine + group-commit writer) and
//!   its gRPC service and client.
//! - [`mirror`]: Barrage deltas to Kafka (Avro single-object encoding), and replay.
//! - [`settings`]: configuration from the environment (the guide's variables and dhbus's own).
//! - [`telemetry`]: tracing and Prometheus setup.
//! - [`proto`]: generated gRPC code.

pub mod bootstrap;
pub mod bus;
pub mod deephaven;
pub mod health;
pub mod mirror;
pub mod ops;
pub mod run;
pub mod metrics;
pub mod schema;
pub mod settings;
pub mod telemetry;

/// Generated protobuf/gRPC code.
pub mod proto {
    /// The Deephaven server API subset (`proto/deephaven/`).
    pub mod dh {
        #![allow(missing_docs, clippy::all)]
        /// `io.deephaven.proto.backplane.grpc`
        pub mod grpc {
            tonic::include_proto!("io.deephaven.proto.backplane.grpc");
        }
        /// `io.deephaven.proto.backplane.script.grpc`
        pub mod script {
            /// Console service.
            pub mod grpc {
                tonic::include_proto!("io.deephaven.proto.backplane.script.grpc");
            }
        }
    }
    /// dhbus's agent API (`proto/dhbus/v1/bus.proto`).
    pub mod bus {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("dhbus.v1");
    }
}
