//! The bus: lease sequencer, gRPC service and client.
pub mod client;
pub mod clock;
pub mod writer;
