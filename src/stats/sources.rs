//! Counters and state of the data sources outside the process: the Redis bus and the upstream
//! exchange connectors, with the snapshots `/health`, `/stats` and `/metrics` show.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use super::Counter;

/// The state of a link to an outside service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Not configured, or not started yet.
    Off,
    /// Connecting or waiting to retry.
    Down,
    /// Connected and working.
    Up,
}

impl LinkState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => LinkState::Down,
            2 => LinkState::Up,
            _ => LinkState::Off,
        }
    }
}

/// An atomically updated [`LinkState`].
#[derive(Debug, Default)]
pub struct AtomicState(AtomicU8);

impl AtomicState {
    /// Sets the state.
    pub fn set(&self, s: LinkState) {
        self.0.store(s as u8, Ordering::Release);
    }

    /// The state now.
    pub fn get(&self) -> LinkState {
        LinkState::from_u8(self.0.load(Ordering::Acquire))
    }
}

/// The Redis bus, as both its reader (edge) and its writer (ingest) see it.
#[derive(Debug, Default)]
pub struct BusStats {
    /// The edge's subscription.
    pub reader: AtomicState,
    /// The ingest side's command connection.
    pub writer: AtomicState,
    /// Messages written to the bus.
    pub published: Counter,
    /// Messages read from the bus and accepted.
    pub received: Counter,
    /// Messages refused because the bus was down (the publisher got `UNAVAILABLE`), or lost
    /// in a write that failed.
    pub lost_bus_down: Counter,
    /// Messages refused because the queue to the bus writer was full.
    pub lost_queue_full: Counter,
    /// Bus messages that were not valid tickfan envelopes.
    pub invalid: Counter,
    /// Bus messages without a seq (published into Redis by something other than tickfan):
    /// sequenced by this node alone.
    pub unsequenced: Counter,
    /// Connections made after a loss (reader and writer).
    pub reconnects: Counter,
    /// Epoch changes adopted from the bus after the first (each closes every subscriber with
    /// 1012).
    pub epoch_changes: Counter,
    /// Whether this node has adopted the bus's epoch once.
    pub epoch_adopted: std::sync::atomic::AtomicBool,
    /// When the reader or the writer was last lost, ms since the epoch (0 = never).
    pub last_down_ms: Counter,
    /// The last error seen on the bus.
    pub last_error: Mutex<Option<String>>,
}

impl BusStats {
    /// Records an error (for `/health`).
    pub fn error(&self, message: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
    }
}

/// `bus` in `/health` and `/stats`.
#[derive(Debug, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct BusSnapshot {
    /// `edge`, `ingest` or `both`.
    pub role: String,
    /// `up` when every connection the role needs is up.
    pub state: LinkState,
    /// The edge's subscription.
    pub reader: LinkState,
    /// The ingest side's connection.
    pub writer: LinkState,
    /// See [`BusStats`].
    pub published: u64,
    /// See [`BusStats`].
    pub received: u64,
    /// See [`BusStats`].
    pub lost_bus_down: u64,
    /// See [`BusStats`].
    pub lost_queue_full: u64,
    /// Messages this node never received (skipped seqs).
    pub gap_messages: u64,
    /// Duplicate or late bus messages dropped.
    pub stale: u64,
    /// See [`BusStats`].
    pub invalid: u64,
    /// See [`BusStats`].
    pub unsequenced: u64,
    /// See [`BusStats`].
    pub reconnects: u64,
    /// See [`BusStats`].
    pub epoch_changes: u64,
    /// See [`BusStats`].
    pub last_down_ms: u64,
    /// See [`BusStats`].
    pub last_error: Option<String>,
}

/// One upstream connector's counters.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// The entry's name.
    pub name: String,
    /// Connected or not.
    pub state: AtomicState,
    /// Connection attempts.
    pub connects: Counter,
    /// Connections that failed or were lost.
    pub disconnects: Counter,
    /// Connections replaced because nothing arrived for `stale_after_ms`.
    pub stale: Counter,
    /// Messages mapped and accepted.
    pub messages: Counter,
    /// Messages that did not map (garbage, unknown event types, missing fields).
    pub unmapped: Counter,
    /// Messages refused by the pipeline (bus down, stream limit).
    pub refused: Counter,
    /// Current connection's instance id (0 when down).
    pub instance: Counter,
    /// When the current connection opened, ms since the epoch.
    pub connected_since_ms: Counter,
    /// The last error.
    pub last_error: Mutex<Option<String>>,
}

impl UpstreamStats {
    /// Counters for the entry `name`.
    pub fn new(name: &str) -> Self {
        UpstreamStats {
            name: name.to_string(),
            ..UpstreamStats::default()
        }
    }

    /// Records an error.
    pub fn error(&self, message: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
    }

    /// For `/health` and `/stats`.
    pub fn snapshot(&self) -> UpstreamSnapshot {
        UpstreamSnapshot {
            name: self.name.clone(),
            state: self.state.get(),
            connects: self.connects.get(),
            disconnects: self.disconnects.get(),
            stale: self.stale.get(),
            messages: self.messages.get(),
            unmapped: self.unmapped.get(),
            refused: self.refused.get(),
            instance: self.instance.get(),
            connected_since_ms: self.connected_since_ms.get(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// One upstream in `/health` and `/stats`.
#[derive(Debug, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSnapshot {
    /// See [`UpstreamStats`].
    pub name: String,
    /// See [`UpstreamStats`].
    pub state: LinkState,
    /// See [`UpstreamStats`].
    pub connects: u64,
    /// See [`UpstreamStats`].
    pub disconnects: u64,
    /// See [`UpstreamStats`].
    pub stale: u64,
    /// See [`UpstreamStats`].
    pub messages: u64,
    /// See [`UpstreamStats`].
    pub unmapped: u64,
    /// See [`UpstreamStats`].
    pub refused: u64,
    /// See [`UpstreamStats`].
    pub instance: u64,
    /// See [`UpstreamStats`].
    pub connected_since_ms: u64,
    /// See [`UpstreamStats`].
    pub last_error: Option<String>,
}
