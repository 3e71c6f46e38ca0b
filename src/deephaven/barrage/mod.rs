//! Barrage: Deephaven's streaming protocol over Arrow Flight. Pure parts (no
//! I/O): the RowSet codec, the flatbuffer messages, assembly of an update from
//! its Flight messages, and the client-side table copy. I/O: the DoExchange
//! subscription that feeds them.

pub mod decode;
pub mod error;
pub mod flatbuf;
pub mod rowset;
pub mod state;
pub mod subscribe;

pub use state::{TableDelta, TableState};
pub use subscribe::{subscribe, SubscribeOptions, Subscription};
