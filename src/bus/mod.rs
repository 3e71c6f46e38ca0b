//! The bus: lease sequencer, gRPC service and client.
pub mod clock;
