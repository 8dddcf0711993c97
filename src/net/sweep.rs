//! Deadlines for the few connections of the ingest and admin threads, checked by a periodic
//! sweep (a timer wheel is for the workers' thousands): a socket that has not finished its
//! request head in time, or a close that does not finish in time, is dropped.

use std::time::{Duration, Instant};

use super::conn::Conn;

/// How often the sweeping threads wake to check deadlines.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// When a connection opened and when it started closing.
#[derive(Debug, Clone, Copy)]
pub struct SweepClock {
    opened: Instant,
    closing_since: Option<Instant>,
}

impl SweepClock {
    /// Starts the clock now.
    pub fn new() -> Self {
        SweepClock {
            opened: Instant::now(),
            closing_since: None,
        }
    }

    /// Time since the connection opened.
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    /// Checks `conn` at `now`: `Some(reason)` when it is past a deadline and must be dropped.
    pub fn check(
        &mut self,
        conn: &Conn,
        now: Instant,
        handshake: Duration,
        close: Duration,
    ) -> Option<&'static str> {
        if conn.in_handshake() && now.duration_since(self.opened) >= handshake {
            return Some("handshake timeout");
        }
        if conn.is_closing() {
            let since = *self.closing_since.get_or_insert(now);
            if now.duration_since(since) >= close {
                return Some("close handshake timeout");
            }
        }
        None
    }
}

impl Default for SweepClock {
    fn default() -> Self {
        Self::new()
    }
}
