//! Routing inside a worker: filters, the stream → subscribers index, and each connection's
//! subscriptions.

pub mod filter;
pub mod index;

pub use filter::{FieldMatch, Filter, StreamKey};
pub use index::{StreamId, StreamTable, Subscriptions};
