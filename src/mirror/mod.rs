//! Durability through Kafka: the mirror of table deltas (`service`), the
//! record format (`codec`, pure), folding records back into tables (`fold`,
//! pure) and disaster-recovery replay (`replay`).

pub mod codec;
pub mod durable;
pub mod follow;
pub mod error;
pub mod fold;
pub mod kafka_config;
pub mod kafka_error;
pub mod ledger;
pub mod readback;
pub mod replay;
pub mod service;
pub mod sink;
pub mod topics;
