//! Routing inside a worker: filters, the stream → subscribers index, each connection's
//! subscriptions, and the candidates for a stream not seen yet.

pub mod candidates;
pub mod filter;
pub mod index;

pub use filter::{FieldMatch, Filter, StreamKey};
pub use index::{StreamId, StreamTable, Subscriptions};

/// Removes one occurrence of `conn` from `list`, if any (the order is not kept).
fn remove_one(list: &mut Vec<usize>, conn: usize) {
    if let Some(pos) = list.iter().position(|&c| c == conn) {
        list.swap_remove(pos);
    }
}
