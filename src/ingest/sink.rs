//! Where accepted messages go, whatever their source (publishers, upstream connectors, the
//! synthetic feed): this node's sequencer, or the Redis bus, whose seq is assigned in Redis.

use std::sync::{Arc, Mutex, PoisonError};

use super::{DispatchError, Dispatcher};
use crate::broker::{Forwarder, Refused};
use crate::protocol::publish::PublishMsg;
use crate::protocol::ErrorCode;

/// A refused message: its position in the batch, the error code and the reason.
pub type Refusal = (usize, ErrorCode, String);

/// The destination of accepted messages (cheap to clone: one per source thread).
#[derive(Debug, Clone)]
pub enum Sink {
    /// Sequenced and delivered by this node.
    Local(Arc<Mutex<Dispatcher>>),
    /// Sequenced in Redis and delivered by every edge node.
    Bus(Forwarder),
    /// Not taken by this node (`bus.role = edge`).
    Refuse,
}

impl Sink {
    /// Passes on each `(index, message)` and wakes the workers; returns how many were
    /// accepted and the refusals.
    pub fn publish<'m, 'a: 'm>(
        &self,
        items: impl IntoIterator<Item = (usize, &'m PublishMsg<'a>)>,
        now_ms: u64,
    ) -> (u64, Vec<Refusal>) {
        let r = self.publish_quietly(items, now_ms);
        self.wake();
        r
    }

    /// Wakes the workers that have new messages (after [`Self::publish_quietly`] calls).
    pub fn wake(&self) {
        if let Sink::Local(dispatcher) = self {
            dispatcher
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wake_workers();
        }
    }

    /// [`Self::publish`] without waking the workers: for a burst, then one [`Self::wake`].
    pub fn publish_quietly<'m, 'a: 'm>(
        &self,
        items: impl IntoIterator<Item = (usize, &'m PublishMsg<'a>)>,
        now_ms: u64,
    ) -> (u64, Vec<Refusal>) {
        let mut accepted = 0;
        let mut refused = Vec::new();
        match self {
            Sink::Local(dispatcher) => {
                let mut d = dispatcher.lock().unwrap_or_else(PoisonError::into_inner);
                for (i, msg) in items {
                    match d.publish(msg, now_ms) {
                        Ok(_) => accepted += 1,
                        Err(DispatchError::TooManyStreams) => refused.push((
                            i,
                            ErrorCode::TooManyStreams,
                            "stream limit reached: no new streams accepted".to_string(),
                        )),
                        // Only bus-assigned seqs can be stale.
                        Err(DispatchError::Stale) => {}
                    }
                }
            }
            Sink::Bus(forwarder) => {
                for (i, msg) in items {
                    match forwarder.forward(msg, now_ms) {
                        Ok(()) => accepted += 1,
                        Err(Refused::Down) => refused.push((
                            i,
                            ErrorCode::Unavailable,
                            "the bus is down: message not accepted; retry later".to_string(),
                        )),
                        Err(Refused::QueueFull) => refused.push((
                            i,
                            ErrorCode::Unavailable,
                            "the bus is behind: message not accepted; retry later".to_string(),
                        )),
                    }
                }
            }
            Sink::Refuse => {
                for (i, _) in items {
                    refused.push((
                        i,
                        ErrorCode::Unavailable,
                        "this node only reads the bus (bus.role = edge): publish to an ingest node"
                            .to_string(),
                    ));
                }
            }
        }
        (accepted, refused)
    }
}
