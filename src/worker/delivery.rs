//! Fan-out of data messages to sessions under the backpressure policies (disconnect, conflate,
//! drop), the `dropped` notices that explain seq gaps, and the process memory guard.
//!
//! Every data message routed to a session ends in exactly one of: written, conflated, dropped
//! by the drop policy, dropped at close, or still pending; the counters of the session and of
//! the worker move in step so that the invariant can be checked at any time.

use log::warn;

use super::lifecycle::{Timer, TimerKind};
use super::session::Session;
use super::Worker;
use crate::bus::DataMsg;
use crate::config::{BackpressureConfig, Policy};
use crate::net::outqueue::OutQueue;
use crate::protocol::{outbound, CloseCode};
use crate::stats::{resident_bytes, WorkerStats};

/// Housekeeping period: queue gauges, memory check.
/// (The peak queue size is tracked on every queued message and published here.)
pub(super) const HOUSEKEEPING_MS: u64 = 250;
/// Slab key used by worker-level timers (no session has it).
pub(super) const WORKER_KEY: usize = usize::MAX;

/// What became of a data message offered to one session.
pub(super) enum Offer {
    /// Queued for writing.
    Queued,
    /// Dropped by the drop policy (counted, reported later).
    Dropped,
    /// The session was closed as a slow consumer (the message was dropped with its queue).
    SlowClose,
    /// The session is closing: not routed.
    NotOpen,
}

/// Closes a slow session with 4001: its unwritten data frames are dropped and counted, control
/// frames already queued stay in front of the close frame.
fn slow_close(s: &mut Session, stats: &WorkerStats, reason: &str) {
    let removed = s.conn.out_mut().drop_data();
    s.dropped_on_close += removed.frames as u64;
    stats.dropped_on_close.add(removed.frames as u64);
    s.note_close(CloseCode::SlowConsumer.as_u16(), reason, true);
    s.conn.close(CloseCode::SlowConsumer, reason);
}

/// Offers one data message to a session under `policy` (inlined into the fan-out loop: a call
/// per delivery costs more than its body's common case).
#[inline(always)]
pub(super) fn offer(
    s: &mut Session,
    msg: &DataMsg,
    policy: Policy,
    bp: &BackpressureConfig,
    now: u64,
    stats: &WorkerStats,
) -> Offer {
    if !s.conn.is_open() {
        return Offer::NotOpen;
    }
    let (frame, stream, ingest_ns) = (&msg.frame, msg.stream, msg.ingest_ns);
    let pending = s.conn.out().pending_bytes();
    let len = frame.len();
    let over_hard = pending + len > bp.hard_limit_bytes;
    // Under the soft limit, or an empty queue (the client has read everything: not slow,
    // however large this one message) within the hard limit.
    if pending + len <= bp.soft_limit_bytes || (pending == 0 && !over_hard) {
        s.over_soft_since = None;
        s.conn.send_data(frame.clone(), stream, ingest_ns);
        return Offer::Queued;
    }
    let since = *s.over_soft_since.get_or_insert(now);
    if !over_hard && now.saturating_sub(since) < bp.soft_grace_ms {
        s.conn.send_data(frame.clone(), stream, ingest_ns);
        return Offer::Queued;
    }
    match policy {
        Policy::Disconnect => {
            stats.slow_disconnects.inc();
            s.dropped_on_close += 1;
            stats.dropped_on_close.inc();
            slow_close(s, stats, "slow consumer");
            Offer::SlowClose
        }
        Policy::Conflate => {
            let removed = s.conn.out_mut().conflate(stream);
            s.conflated += removed.frames as u64;
            stats.conflated.add(removed.frames as u64);
            if pending - removed.bytes + len > bp.hard_limit_bytes {
                // Even one message per stream does not fit: conflation cannot help.
                stats.slow_disconnects.inc();
                s.dropped_on_close += 1;
                stats.dropped_on_close.inc();
                slow_close(s, stats, "slow consumer");
                Offer::SlowClose
            } else {
                s.conn.send_data(frame.clone(), stream, ingest_ns);
                Offer::Queued
            }
        }
        Policy::Drop => {
            s.dropped_slow += 1;
            stats.dropped_slow.inc();
            let missed = s.missed.get_or_insert_with(Default::default);
            match missed.iter_mut().find(|(id, _)| *id == stream) {
                Some((_, n)) => *n += 1,
                None => missed.push((stream, 1)),
            }
            Offer::Dropped
        }
    }
}

impl Worker {
    /// Routes one data message to every subscriber of its stream.
    pub(super) fn fan_out(&mut self, msg: DataMsg) {
        self.stats.data_in.inc();
        // One refcount per message: the config stays borrowed while sessions are mutated.
        let cfg = std::sync::Arc::clone(&self.cfg);
        let bp = &cfg.backpressure;
        if !self.streams.contains(msg.stream) {
            // Only connections with a filter naming the symbol (or any symbol) can match: with
            // thousands of connections, checking all of them for every new stream stalled the
            // loop (light: 100 streams x 1,000 connections, 40 ms of user CPU).
            let mut subscribers = Vec::new();
            for k in self.streams.candidates(&msg.key.symbol) {
                let Some(s) = self.sessions.get_mut(k) else {
                    continue;
                };
                if s.subs.matches(&msg.key) {
                    subscribers.push(k);
                    s.subs.note_new_stream(msg.stream);
                }
            }
            let policy = bp.policy_for(&msg.key.data_type);
            self.streams
                .insert(msg.stream, msg.key.clone(), subscribers, policy);
        }
        let gap = self.streams.note_seq(msg.stream, msg.seq);
        self.record_history(&msg);
        let Some(entry) = self.streams.get(msg.stream) else {
            return;
        };
        let batch = &cfg.batch;
        let mut routed = 0u64;
        for (i, &k) in entry.subscribers.iter().enumerate() {
            super::prefetch_ahead(
                &self.sessions,
                &entry.subscribers,
                i,
                OutQueue::prefetch_back,
            );
            let Some(s) = self.sessions.get_mut(k) else {
                continue;
            };
            if gap > 0 {
                // Seqs the bus skipped never reached this node; the rest were lost to this
                // worker's full channel.
                let reason = if gap <= msg.missed {
                    "bus_gap"
                } else {
                    "worker_overloaded"
                };
                s.conn.send(outbound::dropped(&entry.key, gap, reason));
            }
            if s.throttled {
                let interval = s.subs.throttle_for(&entry.key);
                if interval > 0 {
                    let throttle = s.throttle.get_or_insert_with(Default::default);
                    if let super::recovery::Admit::Held { replaced, arm } =
                        super::recovery::admit(throttle, &msg, interval, self.now)
                    {
                        routed += 1;
                        s.data_queued += 1;
                        if replaced {
                            s.conflated += 1;
                            self.stats.conflated.inc();
                        }
                        if let Some(at) = arm {
                            let t = Timer::new(k, s.id, TimerKind::Throttle);
                            self.timers.insert(at, t);
                        }
                        continue;
                    }
                }
            }
            let urgent = match offer(s, &msg, entry.policy, bp, self.now, &self.stats) {
                Offer::NotOpen => continue,
                Offer::Dropped => {
                    routed += 1;
                    continue;
                }
                Offer::SlowClose => true,
                Offer::Queued => {
                    s.data_queued += 1;
                    self.peak_pending = self.peak_pending.max(s.conn.out().pending_bytes());
                    if batch.window_ms == 0 {
                        true
                    } else {
                        s.batch_count += 1;
                        s.batch_bytes += msg.frame.len();
                        if s.batch_count == 1 {
                            s.batch_deadline = self.now + batch.window_ms;
                            let t = Timer::new(k, s.id, TimerKind::Batch);
                            self.timers.insert(s.batch_deadline, t);
                        }
                        gap > 0
                            || s.batch_count >= batch.max_messages
                            || s.batch_bytes >= batch.max_bytes
                    }
                }
            };
            routed += 1;
            if urgent && !s.dirty {
                s.dirty = true;
                self.dirty.push(k);
            }
        }
        // Bus gaps are counted once, by the dispatcher (`bus.gapMessages`).
        let channel_gap = gap.saturating_sub(msg.missed);
        if channel_gap > 0 {
            self.stats.channel_gap_messages.add(channel_gap);
        }
        self.stats.messages_forwarded.add(routed);
    }

    /// After a write: leave the soft-limit state when under it, and report what the drop
    /// policy dropped once the queue has room again.
    pub(super) fn after_write(&mut self, key: usize) {
        let soft = self.cfg.backpressure.soft_limit_bytes;
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.conn.out().pending_bytes() >= soft {
            return;
        }
        s.over_soft_since = None;
        for (stream, count) in s.missed.take().map(|m| *m).unwrap_or_default() {
            if let Some(entry) = self.streams.get(stream) {
                s.conn
                    .send(outbound::dropped(&entry.key, count, "slow_consumer"));
            }
        }
    }

    /// Arms the first housekeeping tick.
    pub(super) fn start_housekeeping(&mut self) {
        let at = self.now + HOUSEKEEPING_MS;
        self.timers
            .insert(at, Timer::new(WORKER_KEY, 0, TimerKind::Housekeeping));
    }

    /// Every [`HOUSEKEEPING_MS`]: queue gauges, and the memory guard, which closes the
    /// slowest consumers (largest queues over the soft limit, a tenth of them per tick) while
    /// the process is over `backpressure.memory_limit_bytes`.
    pub(super) fn housekeeping(&mut self) {
        self.latency.publish(&self.stats.latency);
        // One pass: idle connections give their queue's slot array back; the rest are summed.
        let mut total = 0usize;
        for (_, s) in self.sessions.iter_mut() {
            s.conn.out_mut().shrink_if_idle();
            total += s.conn.out().pending_bytes();
        }
        self.stats.pending_bytes.set(total as u64);
        self.stats.peak_pending_bytes.set(self.peak_pending as u64);
        let bp = &self.cfg.backpressure;
        let rss = if bp.memory_limit_bytes > 0 {
            resident_bytes()
        } else {
            0
        };
        let over = bp.memory_limit_bytes > 0 && rss > bp.memory_limit_bytes;
        if over && self.stats.memory_over_limit.get() == 0 {
            self.shared.record_error(format!(
                "worker {}: resident memory {rss} bytes over backpressure.memory_limit_bytes {}",
                self.index, bp.memory_limit_bytes
            ));
        }
        self.stats.memory_over_limit.set(u64::from(over));
        if over {
            let soft = bp.soft_limit_bytes;
            let mut slow: Vec<(usize, usize)> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.conn.is_open() && s.conn.out().pending_bytes() > soft)
                .map(|(k, s)| (s.conn.out().pending_bytes(), k))
                .collect();
            slow.sort_unstable_by(|a, b| b.cmp(a));
            let shed = slow.len().div_ceil(10);
            if shed > 0 {
                warn!(
                    "worker {}: memory over {} bytes, closing {shed} of {} slow consumers",
                    self.index,
                    bp.memory_limit_bytes,
                    slow.len()
                );
            }
            for &(_, k) in slow.iter().take(shed) {
                self.stats.memory_sheds.inc();
                slow_close(
                    &mut self.sessions[k],
                    &self.stats,
                    "slow consumer (server memory pressure)",
                );
                self.settle(k);
            }
        }
        self.start_housekeeping();
    }
}
