//! Routing inside a worker: filters, the stream → subscribers index, each connection's
//! subscriptions, and the candidates for a stream not seen yet.

pub mod candidates;
pub mod filter;
pub mod index;

pub use filter::{FieldMatch, Filter, StreamKey};
pub use index::{StreamId, StreamTable, Subscriptions};
