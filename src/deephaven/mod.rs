//! A native Rust client of the Deephaven server: sessions and auth, tables,
//! input tables, DoPut/DoGet, filtered views and Barrage subscriptions.
//! This module knows nothing of agents or Kafka.

pub mod barrage;
pub mod channel;
pub mod config;
pub mod console;
pub mod error;
pub mod filter;
pub mod input;
pub mod pool;
pub mod session;
pub mod table;
pub mod ticket;

pub use config::{ClientConfig, Credentials};
pub use console::Console;
pub use error::{DeephavenError, Result};
pub use filter::{Filter, FilterOp, FilterValue};
pub use input::{create_input_table, InputKind, InputTable};
pub use pool::SessionPool;
pub use session::Session;
pub use table::TableHandle;
pub use ticket::{validate_identifier, Ticket};
