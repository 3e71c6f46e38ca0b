//! The bus: the lease sequencer and its gRPC API.
//!
//! - [`lease`]: the pure lease state machine (no I/O);
//! - [`sequencer`]: the task that owns the state, group-commits changes to
//!   Deephaven, serves long-poll claims and adopts direct inserts;
//! - [`service`]: the gRPC face; [`client`]: `DeephavenBus`, the agents' client;
//! - [`rows`]: conversions between rows, Arrow batches and protobuf messages.

pub mod client;
pub mod clock;
pub mod command;
pub mod lease;
pub mod rows;
pub mod sequencer;
pub mod service;
pub mod subscribe;
pub mod writer;
