//! The pure lease state machine (no I/O, no clock): model, errors, machine.

pub mod error;
pub mod machine;
pub mod model;
#[cfg(test)]
mod tests;

pub use error::LeaseError;
pub use machine::{Changes, ForceSelector, LeaseConfig, LeaseState};
pub use model::{Event, Message, NewMessage, Status};
