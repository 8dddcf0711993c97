//! Counters: each worker and the ingest side own theirs and are their only writers (relaxed
//! atomics, no shared counter on the hot path); readers sum them into snapshots.

pub mod latency;
pub mod sources;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::protocol::ErrorCode;

/// A counter or gauge written by one thread and read by any.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n` (single writer: a load and a store, no locked instruction).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    /// Subtracts `n` (gauges).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }
    /// Sets the value (gauges).
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    /// Reads the value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One worker's counters.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Connections accepted on the public listener.
    pub connections_accepted: Counter,
    /// Connections currently open (any phase).
    pub connections_active: Counter,
    /// WebSocket upgrades completed.
    pub handshakes: Counter,
    /// WebSocket connections currently open.
    pub websockets_active: Counter,
    /// Plain HTTP requests answered (health, 404, 426, ...).
    pub http_requests: Counter,
    /// Connections closed.
    pub connections_closed: Counter,
    /// Sum of the lifetimes of closed connections, in ms.
    pub closed_duration_ms: Counter,
    /// Closes for protocol violations (1002, 1007, 1009).
    pub closed_protocol: Counter,
    /// Closes for repeated rate-limit abuse (1008).
    pub closed_rate_limit: Counter,
    /// Connections dropped on socket errors or lost without a close frame.
    pub closed_io_error: Counter,
    /// Connections closed with 1001 after missing heartbeats.
    pub closed_heartbeat_timeout: Counter,
    /// Sockets dropped for not finishing the upgrade in time.
    pub closed_handshake_timeout: Counter,
    /// Connections dropped for not finishing the close handshake in time.
    pub closed_close_timeout: Counter,
    /// Connections closed with 1001 at `limits.max_lifetime_ms`.
    pub closed_lifetime: Counter,
    /// Connections closed with 1001 by a graceful shutdown.
    pub closed_shutdown: Counter,
    /// Heartbeat pings sent.
    pub pings_sent: Counter,
    /// Upgrades refused with 401 (missing or bad token).
    pub refused_unauthorized: Counter,
    /// Upgrades refused with 403 (origin not allowed).
    pub refused_origin: Counter,
    /// Upgrades refused with 503 (`limits.max_connections`).
    pub refused_capacity: Counter,
    /// Requests refused with 429 (per-IP limits).
    pub refused_per_ip: Counter,
    /// Upgrades refused with 429 (per-user limit).
    pub refused_per_user: Counter,
    /// Subscribes refused with FORBIDDEN (outside the token's channels).
    pub forbidden_subscriptions: Counter,
    /// Connections closed with 4002 (replaced by a newer one of the same user).
    pub closed_replaced: Counter,
    /// Connections closed with 1008 because their token expired.
    pub closed_token_expired: Counter,
    /// Connections closed with 1012 because the bus's epoch changed.
    pub closed_restart: Counter,
    /// Application messages received from clients.
    pub messages_received: Counter,
    /// Data messages taken from the worker's channel.
    pub data_in: Counter,
    /// Data messages routed to connections (one per matching open connection).
    pub messages_forwarded: Counter,
    /// Data frames completely written to sockets.
    pub data_written: Counter,
    /// Data frames replaced by a newer one of the same stream (conflate policy).
    pub conflated: Counter,
    /// Data messages dropped for a connection over its limit (drop policy).
    pub dropped_slow: Counter,
    /// Data frames still queued when their connection closed (slow-consumer closes included).
    pub dropped_on_close: Counter,
    /// Connections closed with 4001 (disconnect policy, or conflation not enough).
    pub slow_disconnects: Counter,
    /// Connections closed with 4001 by the memory guard.
    pub memory_sheds: Counter,
    /// Messages a worker never received because its channel was full (seen as seq gaps).
    pub channel_gap_messages: Counter,
    /// Bytes queued on this worker's connections (updated every housekeeping tick).
    pub pending_bytes: Counter,
    /// The largest output queue any connection of this worker ever had, in bytes.
    pub peak_pending_bytes: Counter,
    /// Bytes of frames held in this worker's stream histories (frames are shared between
    /// workers, so the process holds at most the largest worker's figure).
    pub history_bytes: Counter,
    /// Messages replayed on resume.
    pub replayed: Counter,
    /// Snapshot messages sent.
    pub snapshots: Counter,
    /// Delivery latency, published every housekeeping tick.
    pub latency: latency::SharedLatency,
    /// 1 while the process is over `backpressure.memory_limit_bytes` (as this worker saw it).
    pub memory_over_limit: Counter,
    /// Frames completely written to sockets.
    pub frames_written: Counter,
    /// Bytes written to sockets.
    pub bytes_written: Counter,
    /// Socket writes: one `send`/`writev` per connection per flush, made as a call of its own
    /// or as an entry of the flush's io_uring submission (`server.io_uring`).
    pub write_syscalls: Counter,
    /// 1 while the worker writes through io_uring, 0 with plain calls (`server.io_uring`
    /// off, or refused by the kernel).
    pub io_uring: Counter,
    /// Filters currently held by this worker's connections.
    pub subscriptions_active: Counter,
    /// Error replies by code (index: [`ErrorCode::index`]).
    pub errors: [Counter; ErrorCode::ALL.len()],
    /// Last time a client message or data message was handled, ms since the epoch.
    pub last_activity_ms: Counter,
    /// Loop turns, for liveness.
    pub loop_turns: Counter,
    /// When the loop last turned, on [`crate::clock::mono_ms`]'s clock (0 = not started or
    /// exited): monotonic, so that a wall-clock step cannot make a worker look stalled.
    pub last_turn_ms: Counter,
}

/// Ingest-side counters (publishers, synthetic feed, dispatch to workers).
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Publisher connections open.
    pub publishers_active: Counter,
    /// Publisher connections accepted.
    pub publishers_accepted: Counter,
    /// Data messages accepted and sequenced.
    pub messages_accepted: Counter,
    /// Publisher messages rejected (invalid).
    pub messages_rejected: Counter,
    /// Messages not delivered to a worker because its channel was full, summed over workers.
    pub dropped_channel_full: Counter,
    /// When that last happened, ms since the epoch (0 = never).
    pub last_channel_drop_ms: Counter,
    /// Streams known.
    pub streams: Counter,
    /// Messages accepted from publishers on the ingest listener.
    pub accepted_from_publishers: Counter,
    /// Messages accepted from the synthetic feed.
    pub accepted_from_feed: Counter,
    /// Messages accepted from upstream exchange connectors.
    pub accepted_from_upstreams: Counter,
    /// When a message was last accepted, ms since the epoch (0 = never).
    pub last_accept_ms: Counter,
    /// Messages this node never received from the bus (skipped seqs while it was cut off).
    pub bus_gap_messages: Counter,
    /// Bus messages dropped because their seq was not newer than their stream's last.
    pub bus_stale: Counter,
    /// Connected publishers and their counters (refreshed by the ingest thread).
    pub publishers: std::sync::Mutex<Vec<PublisherInfo>>,
}

/// One connected publisher, as `/stats` shows it.
#[derive(Debug, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct PublisherInfo {
    /// Publisher id (as in the logs).
    pub id: u64,
    /// Peer address.
    pub peer: String,
    /// Connected for, in ms.
    pub connected_ms: u64,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages rejected.
    pub rejected: u64,
}

/// Every counter of the process, shared read-only.
#[derive(Debug)]
pub struct StatsRegistry {
    /// Per worker, by index.
    pub workers: Vec<Arc<WorkerStats>>,
    /// Ingest side.
    pub ingest: Arc<IngestStats>,
    /// Process start.
    pub started: Instant,
    /// The Redis bus.
    pub bus: Arc<sources::BusStats>,
    /// The bus role, set when a bus is configured.
    pub bus_role: std::sync::OnceLock<crate::config::BusRole>,
    /// Upstream connectors, set at start.
    pub upstreams: std::sync::OnceLock<Vec<Arc<sources::UpstreamStats>>>,
}

/// Resident memory of this process in bytes, from /proc (0 where unavailable).
pub fn resident_bytes() -> u64 {
    crate::procfs::own_rss_bytes()
}

/// A point-in-time sum over workers, for `/health`, `/stats` and the SIGUSR1 dump.
#[derive(Debug, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Seconds since start.
    pub uptime: u64,
    /// Resident memory of the process in bytes (from /proc).
    pub resident_memory_bytes: u64,
    /// Connections accepted since start.
    pub total_connections: u64,
    /// WebSocket connections open now.
    pub active_connections: u64,
    /// Sockets open now on the public listener (WebSockets plus plain HTTP and handshakes).
    pub open_sockets: u64,
    /// Filters held now.
    pub total_subscriptions: u64,
    /// Mean lifetime of closed connections, in ms.
    pub average_connection_duration: u64,
    /// Data messages queued to subscribers.
    pub messages_forwarded: u64,
    /// Error replies sent plus protocol closes.
    pub errors_encountered: u64,
    /// Last activity, ms since the epoch.
    pub last_activity: u64,
    /// Frames written.
    pub frames_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Socket writes (see [`WorkerStats::write_syscalls`]).
    pub write_syscalls: u64,
    /// Data messages accepted from publishers and the feed.
    pub messages_accepted: u64,
    /// Of those, from publishers.
    pub accepted_from_publishers: u64,
    /// Of those, from the synthetic feed.
    pub accepted_from_feed: u64,
    /// Error replies by code.
    pub errors_by_code: Vec<(String, u64)>,
    /// Connected publishers.
    pub publisher_list: Vec<PublisherInfo>,
    /// Publisher messages rejected.
    pub messages_rejected: u64,
    /// Messages dropped because a worker's channel was full.
    pub dropped_channel_full: u64,
    /// Streams known.
    pub streams: u64,
    /// Publishers connected.
    pub publishers: u64,
    /// Heartbeat pings sent.
    pub pings_sent: u64,
    /// Bytes of frames in the stream histories, summed over workers (a frame shared by two
    /// workers counts twice).
    pub history_bytes: u64,
    /// Messages replayed on resume.
    pub replayed: u64,
    /// Snapshot messages sent.
    pub snapshots: u64,
    /// Delivery latency (accepted → written to the socket), all workers, in ms.
    pub latency_ms: latency::LatencySummary,
    /// Delivery latency over the last complete second, all workers, in ms (for live charts).
    pub latency_recent_ms: latency::LatencySummary,
    /// Where every data message routed to a connection went.
    pub delivery: DeliverySnapshot,
    /// Closed connections by cause.
    pub closed: ClosedSnapshot,
    /// Refused connections and requests by reason.
    pub refused: RefusedSnapshot,
    /// Per worker: active connections and messages forwarded.
    pub workers: Vec<WorkerSnapshot>,
    /// Messages accepted from upstream exchange connectors.
    pub accepted_from_upstreams: u64,
    /// The Redis bus, when configured.
    pub bus: Option<sources::BusSnapshot>,
    /// Upstream exchange connectors.
    pub upstreams: Vec<sources::UpstreamSnapshot>,
}

/// The fate of data messages routed to connections. Invariant:
/// `routed = written + conflated + droppedSlowConsumer + droppedOnClose + pending`.
#[derive(Debug, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySnapshot {
    /// Routed to a connection (the same as `messagesForwarded`).
    pub routed: u64,
    /// Written to the socket.
    pub written: u64,
    /// Replaced by a newer message of the same stream (conflate policy).
    pub conflated: u64,
    /// Dropped for a connection over its limit (drop policy).
    pub dropped_slow_consumer: u64,
    /// Still queued when the connection closed.
    pub dropped_on_close: u64,
    /// Queued now (routed minus the rest).
    pub pending: u64,
    /// Bytes queued now (as of the last housekeeping tick).
    pub pending_bytes: u64,
    /// Connections closed with 4001 for being slow.
    pub disconnected_slow: u64,
    /// Connections closed with 4001 by the memory guard.
    pub memory_shed: u64,
    /// Messages workers never received because their channel was full.
    pub channel_gap_messages: u64,
}

/// Closed connections by cause (the causes the gateway decides; the rest closed normally).
#[derive(Debug, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClosedSnapshot {
    /// All closed connections.
    pub total: u64,
    /// Silent past ping interval + pong timeout (1001).
    pub heartbeat_timeout: u64,
    /// Did not finish the upgrade in time.
    pub handshake_timeout: u64,
    /// Did not finish the close handshake in time.
    pub close_timeout: u64,
    /// Reached `limits.max_lifetime_ms` (1001).
    pub lifetime: u64,
    /// Closed by a graceful shutdown (1001).
    pub shutdown: u64,
    /// Protocol violations (1002, 1007, 1009).
    pub protocol: u64,
    /// Repeated rate-limit abuse (1008).
    pub rate_limit: u64,
    /// Socket errors or lost without a close frame.
    pub io_error: u64,
    /// Replaced by a newer connection of the same user (4002).
    pub replaced: u64,
    /// Token expired without a refresh (1008).
    pub token_expired: u64,
    /// The bus's epoch changed (1012).
    pub restart: u64,
}

/// Connections and requests refused at the door, by reason.
#[derive(Debug, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RefusedSnapshot {
    /// 401: missing or bad token.
    pub unauthorized: u64,
    /// 403: origin not allowed.
    pub origin: u64,
    /// 503: `limits.max_connections`.
    pub capacity: u64,
    /// 429: per-IP limits.
    pub per_ip: u64,
    /// 429: per-user limit.
    pub per_user: u64,
    /// FORBIDDEN subscribes (outside the token's channels).
    pub forbidden_subscriptions: u64,
}

/// One worker's share of a [`Snapshot`].
#[derive(Debug, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSnapshot {
    /// Worker index.
    pub worker: usize,
    /// WebSocket connections open.
    pub active_connections: u64,
    /// Connections accepted.
    pub total_connections: u64,
    /// Messages forwarded.
    pub messages_forwarded: u64,
    /// Socket writes (see [`WorkerStats::write_syscalls`]).
    pub write_syscalls: u64,
    /// Whether it writes through io_uring.
    pub io_uring: bool,
    /// Loop turns.
    pub loop_turns: u64,
    /// Bytes queued on its connections.
    pub pending_bytes: u64,
    /// The largest output queue any of its connections ever had, in bytes.
    pub peak_pending_bytes: u64,
    /// Messages it never received because its channel was full.
    pub channel_gap_messages: u64,
    /// Bytes of frames in its stream histories.
    pub history_bytes: u64,
    /// Its delivery latency, in ms.
    pub latency_ms: latency::LatencySummary,
}

impl StatsRegistry {
    /// A registry for `workers` workers.
    pub fn new(workers: usize) -> Self {
        StatsRegistry {
            workers: (0..workers)
                .map(|_| Arc::new(WorkerStats::default()))
                .collect(),
            ingest: Arc::new(IngestStats::default()),
            started: Instant::now(),
            bus: Arc::new(sources::BusStats::default()),
            bus_role: std::sync::OnceLock::new(),
            upstreams: std::sync::OnceLock::new(),
        }
    }

    /// Sums every worker.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            uptime: self.started.elapsed().as_secs(),
            resident_memory_bytes: resident_bytes(),
            ..Snapshot::default()
        };
        let mut closed = 0;
        let mut closed_ms = 0;
        let mut all_latency = latency::empty();
        let mut recent_latency = latency::empty();
        for (i, w) in self.workers.iter().enumerate() {
            s.total_connections += w.connections_accepted.get();
            s.active_connections += w.websockets_active.get();
            s.open_sockets += w.connections_active.get();
            s.total_subscriptions += w.subscriptions_active.get();
            s.messages_forwarded += w.messages_forwarded.get();
            s.errors_encountered += w.errors.iter().map(Counter::get).sum::<u64>()
                + w.closed_protocol.get()
                + w.closed_rate_limit.get();
            s.last_activity = s.last_activity.max(w.last_activity_ms.get());
            s.frames_written += w.frames_written.get();
            s.bytes_written += w.bytes_written.get();
            s.write_syscalls += w.write_syscalls.get();
            closed += w.connections_closed.get();
            s.pings_sent += w.pings_sent.get();
            s.history_bytes += w.history_bytes.get();
            s.replayed += w.replayed.get();
            s.snapshots += w.snapshots.get();
            let d = &mut s.delivery;
            d.routed += w.messages_forwarded.get();
            d.written += w.data_written.get();
            d.conflated += w.conflated.get();
            d.dropped_slow_consumer += w.dropped_slow.get();
            d.dropped_on_close += w.dropped_on_close.get();
            d.pending_bytes += w.pending_bytes.get();
            d.disconnected_slow += w.slow_disconnects.get();
            d.memory_shed += w.memory_sheds.get();
            d.channel_gap_messages += w.channel_gap_messages.get();
            let c = &mut s.closed;
            c.total += w.connections_closed.get();
            c.heartbeat_timeout += w.closed_heartbeat_timeout.get();
            c.handshake_timeout += w.closed_handshake_timeout.get();
            c.close_timeout += w.closed_close_timeout.get();
            c.lifetime += w.closed_lifetime.get();
            c.shutdown += w.closed_shutdown.get();
            c.protocol += w.closed_protocol.get();
            c.rate_limit += w.closed_rate_limit.get();
            c.io_error += w.closed_io_error.get();
            c.replaced += w.closed_replaced.get();
            c.token_expired += w.closed_token_expired.get();
            c.restart += w.closed_restart.get();
            let r = &mut s.refused;
            r.unauthorized += w.refused_unauthorized.get();
            r.origin += w.refused_origin.get();
            r.capacity += w.refused_capacity.get();
            r.per_ip += w.refused_per_ip.get();
            r.per_user += w.refused_per_user.get();
            r.forbidden_subscriptions += w.forbidden_subscriptions.get();
            closed_ms += w.closed_duration_ms.get();
            s.workers.push(WorkerSnapshot {
                worker: i,
                active_connections: w.websockets_active.get(),
                total_connections: w.connections_accepted.get(),
                messages_forwarded: w.messages_forwarded.get(),
                write_syscalls: w.write_syscalls.get(),
                io_uring: w.io_uring.get() == 1,
                loop_turns: w.loop_turns.get(),
                pending_bytes: w.pending_bytes.get(),
                peak_pending_bytes: w.peak_pending_bytes.get(),
                channel_gap_messages: w.channel_gap_messages.get(),
                history_bytes: w.history_bytes.get(),
                latency_ms: {
                    let mut h = latency::empty();
                    w.latency.merge_into(&mut h);
                    w.latency.merge_recent_into(&mut recent_latency);
                    let _ = all_latency.add(&h);
                    latency::summarize(&h)
                },
            });
        }
        s.average_connection_duration = closed_ms.checked_div(closed).unwrap_or(0);
        s.latency_ms = latency::summarize(&all_latency);
        s.latency_recent_ms = latency::summarize(&recent_latency);
        let d = &mut s.delivery;
        d.pending = d
            .routed
            .saturating_sub(d.written + d.conflated + d.dropped_slow_consumer + d.dropped_on_close);
        let ing = &self.ingest;
        s.messages_accepted = ing.messages_accepted.get();
        s.accepted_from_publishers = ing.accepted_from_publishers.get();
        s.accepted_from_feed = ing.accepted_from_feed.get();
        s.publisher_list = ing.publishers.lock().map(|l| l.clone()).unwrap_or_default();
        s.errors_by_code = ErrorCode::ALL
            .iter()
            .map(|c| {
                let n = self.workers.iter().map(|w| w.errors[c.index()].get()).sum();
                (c.as_str().to_string(), n)
            })
            .collect();
        s.messages_rejected = ing.messages_rejected.get();
        s.dropped_channel_full = ing.dropped_channel_full.get();
        s.streams = ing.streams.get();
        s.publishers = ing.publishers_active.get();
        s.errors_encountered += s.messages_rejected;
        s.accepted_from_upstreams = ing.accepted_from_upstreams.get();
        s.bus = self.bus_role.get().map(|&role| self.bus_snapshot(role));
        s.upstreams = self
            .upstreams
            .get()
            .map(|l| l.iter().map(|u| u.snapshot()).collect())
            .unwrap_or_default();
        s
    }

    fn bus_snapshot(&self, role: crate::config::BusRole) -> sources::BusSnapshot {
        use sources::LinkState;
        let b = &self.bus;
        let (reader, writer) = (b.reader.get(), b.writer.get());
        let needed = [(role.reads(), reader), (role.writes(), writer)];
        let state = if needed.iter().all(|&(need, s)| !need || s == LinkState::Up) {
            LinkState::Up
        } else {
            LinkState::Down
        };
        sources::BusSnapshot {
            role: role.as_str().to_string(),
            state,
            reader,
            writer,
            published: b.published.get(),
            received: b.received.get(),
            lost_bus_down: b.lost_bus_down.get(),
            lost_queue_full: b.lost_queue_full.get(),
            gap_messages: self.ingest.bus_gap_messages.get(),
            stale: self.ingest.bus_stale.get(),
            invalid: b.invalid.get(),
            unsequenced: b.unsequenced.get(),
            reconnects: b.reconnects.get(),
            epoch_changes: b.epoch_changes.get(),
            last_down_ms: b.last_down_ms.get(),
            last_error: b
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_workers() {
        let r = StatsRegistry::new(2);
        r.workers[0].websockets_active.add(3);
        r.workers[1].websockets_active.add(4);
        r.workers[1].websockets_active.sub(1);
        r.workers[0].connections_closed.add(2);
        r.workers[0].closed_duration_ms.add(300);
        r.workers[1].errors[ErrorCode::NotFound.index()].inc();
        let s = r.snapshot();
        assert_eq!(s.active_connections, 6);
        assert_eq!(s.average_connection_duration, 150);
        assert_eq!(s.errors_encountered, 1);
        assert_eq!(s.workers.len(), 2);
    }
}
