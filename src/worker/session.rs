//! A subscriber session: one connection's WebSocket, filters, counters, rate limit, heartbeat
//! and batching state, and how it ended.

use crate::net::conn::Conn;
use crate::protocol::outbound::ConnStatsReply;
use crate::routing::Subscriptions;

/// A token bucket for inbound client messages (times on the worker clock, in ms).
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f32,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at worker clock `now_ms`.
    pub fn new(burst: u32, now_ms: u64) -> Self {
        TokenBucket {
            tokens: burst as f32,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one, refilling at `rate_per_sec` up to `burst`.
    pub fn take(&mut self, now_ms: u64, rate_per_sec: u32, burst: u32) -> bool {
        let dt = now_ms.saturating_sub(self.last_ms) as f32 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + dt * rate_per_sec as f32).min(burst as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How a connection ended, for the close log line and counters.
#[derive(Debug, Clone, Default)]
pub struct CloseInfo {
    /// The WebSocket close code (sent by us or received), 0 when none was exchanged.
    pub code: u16,
    /// Why.
    pub reason: String,
    /// Whether this is worth an info line (errors, timeouts, lost connections).
    pub abnormal: bool,
}

/// What a token said about a connection's user (boxed: most deployments run without auth, and
/// an idle connection should cost as few bytes as possible).
#[derive(Debug)]
pub struct SessionAuth {
    /// The user (`sub`).
    pub user: String,
    /// When the token expires, ms since the epoch.
    pub expires_ms: u64,
    /// What the token allows it to subscribe to (`None`: everything).
    pub channels: Option<Vec<crate::auth::channels::ChannelPattern>>,
}

/// One subscriber connection owned by a worker.
///
/// Laid out for the delivery loops (docs/architecture.md, "Memory layout of a session"):
/// `repr(C)` and aligned to a cache line, the fields that fan-out and flush read and write for
/// every delivery come first, in the first line, and the connection's queue and socket fill
/// the second. Everything after those 128 bytes is touched only by requests, timers and
/// closes. Moving a field across that boundary costs a cache miss per delivery.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Session {
    // Line 0: per-delivery state and counters.
    /// Whether it is in the worker's list of connections to flush this turn.
    pub dirty: bool,
    /// Whether it is registered for WRITABLE (only while the socket holds back output).
    pub want_write: bool,
    /// Whether a filter is throttled (`subs.has_throttles()`, kept here by
    /// [`Self::subs_changed`] so that fan-out does not read `subs`).
    pub throttled: bool,
    /// Whether the close-handshake deadline is armed.
    pub close_armed: bool,
    /// Data frames queued since the last flush (batching).
    pub batch_count: u32,
    /// Worker clock (ms) since when its queue is above the soft limit.
    pub over_soft_since: Option<u64>,
    /// Data messages dropped by the drop policy and not yet reported, by stream.
    // Boxed: 8 bytes per connection instead of 24; only the drop policy ever fills it.
    #[allow(clippy::box_collection)]
    pub missed: Option<Box<Vec<(u32, u64)>>>,
    /// Data messages queued.
    pub data_queued: u64,
    /// Data frames written in full.
    pub data_written: u64,
    /// Frames written in full.
    pub frames_out: u64,
    /// Bytes written.
    pub bytes_out: u64,
    // Line 1: the output queue and the socket (the rest of `Conn` follows).
    /// The connection.
    pub conn: Conn,
    // Cold: requests, timers, closes.
    /// Filters and matched streams.
    pub subs: Subscriptions,
    /// Process-unique id (worker index in the top 16 bits), used in logs and `getStats`.
    pub id: u64,
    /// When it was accepted, on the worker clock (ms).
    pub opened_at: u64,
    /// When it was accepted, ms since the epoch.
    pub opened_ms: u64,
    /// Inbound rate limit.
    pub bucket: TokenBucket,
    /// Worker clock (ms) of the last frame received from the client.
    pub last_rx_ms: u64,
    /// Worker clock (ms) when an unanswered heartbeat ping was sent.
    pub ping_sent_ms: Option<u64>,
    /// Data bytes queued since the last flush (batching).
    pub batch_bytes: usize,
    /// Worker clock (ms) when the current batch must be flushed.
    pub batch_deadline: u64,
    /// How it ended (first cause wins).
    pub close: Option<Box<CloseInfo>>,
    /// Why it was refused at accept (per-IP limits); answered 429 when its request arrives.
    pub refused: Option<Box<str>>,
    /// The authenticated user and its token's terms, when authentication is on.
    pub auth: Option<Box<SessionAuth>>,
    /// Throttled streams' state (only for connections with a throttled filter).
    pub throttle: Option<Box<super::recovery::Throttle>>,
    /// Data frames replaced by newer ones (conflate policy).
    pub conflated: u64,
    /// Data messages dropped by the drop policy.
    pub dropped_slow: u64,
    /// Data frames dropped unwritten at a slow-consumer close.
    pub dropped_on_close: u64,
    /// Application messages received.
    pub messages_in: u64,
    /// Error replies sent.
    pub errors: u64,
    /// RATE_LIMITED replies since the last accepted message.
    pub strikes: u32,
    /// Whether it completed the WebSocket upgrade.
    pub upgraded: bool,
}

/// Bytes at the start of a [`Session`] that the delivery loops touch: the ones to prefetch.
pub const SESSION_HOT_BYTES: usize = 128;

impl Session {
    /// A new session for an accepted connection at worker clock `now`.
    pub fn new(conn: Conn, id: u64, burst: u32, now: u64) -> Self {
        Session {
            dirty: false,
            want_write: false,
            throttled: false,
            close_armed: false,
            batch_count: 0,
            over_soft_since: None,
            missed: None,
            data_queued: 0,
            data_written: 0,
            frames_out: 0,
            bytes_out: 0,
            conn,
            id,
            opened_at: now,
            opened_ms: crate::shared::now_ms(),
            upgraded: false,
            subs: Subscriptions::default(),
            bucket: TokenBucket::new(burst, now),
            strikes: 0,
            last_rx_ms: now,
            ping_sent_ms: None,
            batch_bytes: 0,
            batch_deadline: 0,
            close: None,
            refused: None,
            auth: None,
            throttle: None,
            conflated: 0,
            dropped_slow: 0,
            dropped_on_close: 0,
            messages_in: 0,
            errors: 0,
        }
    }

    /// To be called after `subs` changed: refreshes [`Self::throttled`].
    pub fn subs_changed(&mut self) {
        self.throttled = self.subs.has_throttles();
    }

    /// Records why the connection ends, unless a cause is already recorded.
    pub fn note_close(&mut self, code: u16, reason: &str, abnormal: bool) {
        if self.close.is_none() {
            self.close = Some(Box::new(CloseInfo {
                code,
                reason: reason.to_string(),
                abnormal,
            }));
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
            data_messages_written: self.data_written,
            conflated: self.conflated,
            dropped_slow_consumer: self.dropped_slow,
            dropped_on_close: self.dropped_on_close,
            pending_data_messages: self.conn.out().pending_data() as u64,
            filters: self.subs.filter_count(),
            streams: self.subs.stream_count(),
            errors: self.errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = 1_000;
        let mut b = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| b.take(t0, 10, 3)));
        assert!(!b.take(t0, 10, 3));
        assert!(b.take(t0 + 100, 10, 3));
        assert!(!b.take(t0 + 150, 10, 3));
        // Refill is capped at the burst.
        let later = t0 + 10_000;
        assert!((0..3).all(|_| b.take(later, 10, 3)));
        assert!(!b.take(later, 10, 3));
    }
}

#[cfg(test)]
mod size_budget {
    /// An idle connection must stay near 1 KiB in all (docs/benchmarks.md): the session, its
    /// boxed WebSocket state and read buffer, and its timers. Growing these needs a reason.
    /// What the delivery loops touch stays in the first [`super::SESSION_HOT_BYTES`]: the
    /// line of per-delivery fields, then the queue, the socket and `writable`.
    #[test]
    fn delivery_fields_fill_the_first_two_cache_lines() {
        use crate::net::conn::ConnIo;
        use std::mem::{align_of, offset_of, size_of};
        type S = super::Session;
        assert_eq!(align_of::<S>(), 64);
        assert!(offset_of!(S, bytes_out) + size_of::<u64>() <= 64);
        assert_eq!(offset_of!(S, conn), 64);
        // `Conn` starts with its `ConnIo` (tested in net::conn).
        assert!(64 + offset_of!(ConnIo, writable) < super::SESSION_HOT_BYTES);
        #[cfg(not(debug_assertions))]
        assert!(64 + offset_of!(ConnIo, bytes_in) <= super::SESSION_HOT_BYTES);
        // The slab's slots use a niche of the session for their tag: line-aligned too.
        assert_eq!(crate::worker::slots::Slots::<S>::SLOT_BYTES, size_of::<S>());
    }

    #[test]
    fn per_connection_structs_stay_small() {
        assert!(
            std::mem::size_of::<super::Session>() <= 448,
            "{}",
            std::mem::size_of::<super::Session>()
        );
        assert!(std::mem::size_of::<crate::net::conn::Conn>() <= 160);
        assert!(std::mem::size_of::<crate::worker::lifecycle::Timer>() <= 16);
    }
}
