//! A subscriber session: one connection's WebSocket, filters, counters and rate limit.

use std::time::Instant;

use crate::net::conn::Conn;
use crate::protocol::outbound::ConnStatsReply;
use crate::routing::Subscriptions;

/// A token bucket for inbound client messages.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f32,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32) -> Self {
        TokenBucket {
            tokens: burst as f32,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one, refilling at `rate_per_sec` up to `burst`.
    pub fn take(&mut self, now: Instant, rate_per_sec: u32, burst: u32) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens = (self.tokens + dt * rate_per_sec as f32).min(burst as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One subscriber connection owned by a worker.
#[derive(Debug)]
pub struct Session {
    /// The connection.
    pub conn: Conn,
    /// Process-unique id (worker index in the top 16 bits), used in logs and `getStats`.
    pub id: u64,
    /// When it was accepted.
    pub opened: Instant,
    /// When it was accepted, ms since the epoch.
    pub opened_ms: u64,
    /// Whether it completed the WebSocket upgrade.
    pub upgraded: bool,
    /// Filters and matched streams.
    pub subs: Subscriptions,
    /// Whether it is in the worker's list of connections to flush this turn.
    pub dirty: bool,
    /// Inbound rate limit.
    pub bucket: TokenBucket,
    /// RATE_LIMITED replies since the last accepted message.
    pub strikes: u32,
    /// Application messages received.
    pub messages_in: u64,
    /// Data messages queued.
    pub data_queued: u64,
    /// Frames written in full.
    pub frames_out: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Error replies sent.
    pub errors: u64,
}

impl Session {
    /// A new session for an accepted connection.
    pub fn new(conn: Conn, id: u64, burst: u32, now_ms: u64) -> Self {
        Session {
            conn,
            id,
            opened: Instant::now(),
            opened_ms: now_ms,
            upgraded: false,
            subs: Subscriptions::default(),
            dirty: false,
            bucket: TokenBucket::new(burst),
            strikes: 0,
            messages_in: 0,
            data_queued: 0,
            frames_out: 0,
            bytes_out: 0,
            errors: 0,
        }
    }

    /// The body of this connection's `stats` reply.
    pub fn stats_reply(&self, worker: usize) -> ConnStatsReply {
        ConnStatsReply {
            connection_id: self.id,
            worker,
            connected_at: self.opened_ms,
            messages_received: self.messages_in,
            bytes_received: self.conn.bytes_in(),
            data_messages_queued: self.data_queued,
            frames_sent: self.frames_out,
            bytes_sent: self.bytes_out,
            pending_bytes: self.conn.out().pending_bytes() as u64,
            filters: self.subs.filter_count(),
            streams: self.subs.stream_count(),
            errors: self.errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(3);
        let t0 = b.last;
        assert!((0..3).all(|_| b.take(t0, 10, 3)));
        assert!(!b.take(t0, 10, 3));
        assert!(b.take(t0 + Duration::from_millis(100), 10, 3));
        assert!(!b.take(t0 + Duration::from_millis(150), 10, 3));
        // Refill is capped at the burst.
        let later = t0 + Duration::from_secs(10);
        assert!((0..3).all(|_| b.take(later, 10, 3)));
        assert!(!b.take(later, 10, 3));
    }
}
