//! Recovery and pacing on top of per-stream seqs: each worker's history ring per stream,
//! snapshots (`"snapshot":true`), replay on `resume`, and throttled filters (`"throttleMs"`).
//!
//! All of it runs on the worker that owns the connection, in the same loop that fans out live
//! data, so a snapshot or replay is always followed by exactly the next live seq: no gap, no
//! duplicate.

use std::collections::HashMap;

use super::delivery::{offer, Offer};
use super::lifecycle::TimerKind;
use super::Worker;
use crate::bus::DataMsg;
use crate::protocol::client::SubscribeOptions;
use crate::protocol::outbound::{self, Recovery};
use crate::routing::index::HistoryEntry;
use crate::routing::StreamId;

/// A throttled connection's state per stream.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Per stream: when a message was last let through (worker clock ms), and the newest one
    /// held back since.
    slots: HashMap<StreamId, (u64, Option<DataMsg>)>,
    /// The deadline of the armed throttle timer, if one is armed.
    armed_at: Option<u64>,
}

impl Throttle {
    /// Messages held back, not yet sent.
    pub fn held(&self) -> usize {
        self.slots.values().filter(|(_, m)| m.is_some()).count()
    }
}

/// Frames found for a subscribe's resume and snapshot, to queue after its reply.
pub(super) struct Recovered {
    frames: Vec<(bytes::Bytes, StreamId)>,
    replayed: u64,
    snapshots: u64,
}

/// What the throttle says about a message.
pub(super) enum Admit {
    /// Send it now.
    Now,
    /// Held (the newest of its stream); `replaced` says an older held one was dropped for it;
    /// `arm` is a timer deadline to set.
    Held { replaced: bool, arm: Option<u64> },
}

/// Lets a message through at most once per `interval_ms` per stream; otherwise keeps it as the
/// stream's newest pending message.
pub(super) fn admit(throttle: &mut Throttle, msg: &DataMsg, interval_ms: u32, now: u64) -> Admit {
    let slot = throttle.slots.entry(msg.stream).or_insert((0, None));
    let due = slot.0 + interval_ms as u64;
    // Let it through when the interval is over and nothing is held (a held message goes out
    // with the timer, so order per stream is kept).
    if (slot.0 == 0 || now >= due) && slot.1.is_none() {
        slot.0 = now.max(1);
        return Admit::Now;
    }
    let replaced = slot.1.replace(msg.clone()).is_some();
    let arm = match throttle.armed_at {
        Some(at) if at <= due => None,
        _ => {
            throttle.armed_at = Some(due);
            Some(due)
        }
    };
    Admit::Held { replaced, arm }
}

fn stream_key_string(key: &crate::routing::StreamKey) -> String {
    format!("{}:{}:{}", key.exchange, key.symbol, key.data_type)
}

impl Worker {
    /// Adds a data message to its stream's history.
    pub(super) fn record_history(&mut self, msg: &DataMsg) {
        let h = &self.cfg.history;
        let entry = HistoryEntry {
            seq: msg.seq,
            at_ms: self.now,
            frame: msg.frame.clone(),
        };
        let (added, removed) = self.streams.record(msg.stream, entry, h.size, h.ttl_ms);
        self.stats.history_bytes.add(added as u64);
        self.stats.history_bytes.sub(removed as u64);
    }

    /// After a subscribe added `added` streams: the frames to send (replays for a `resume`,
    /// then snapshots of the other added streams when asked) and the resume outcome for the
    /// `subscribed` reply. The caller queues the reply, then [`Self::queue_recovered`].
    pub(super) fn recover(
        &mut self,
        added: &[StreamId],
        options: &SubscribeOptions,
    ) -> (Option<Recovery>, Recovered) {
        let ttl = self.cfg.history.ttl_ms;
        let now = self.now;
        let mut frames: Vec<(bytes::Bytes, StreamId)> = Vec::new();
        let mut recovery = None;
        let mut resumed: Vec<StreamId> = Vec::new();
        if let Some(resume) = &options.resume {
            let mut r = Recovery::default();
            let by_key: HashMap<String, StreamId> = added
                .iter()
                .filter_map(|&id| {
                    self.streams
                        .get(id)
                        .map(|e| (stream_key_string(&e.key), id))
                })
                .collect();
            let epoch = self.shared.epoch();
            for (name, last_seen) in &resume.streams {
                let reason = if *resume.epoch != *epoch {
                    Some(format!("epoch changed (now {epoch})"))
                } else if let Some(&id) = by_key.get(name) {
                    let Some(entry) = self.streams.get(id) else {
                        continue;
                    };
                    let live = entry
                        .history
                        .iter()
                        .filter(|h| ttl == 0 || now.saturating_sub(h.at_ms) <= ttl);
                    let oldest = live.clone().map(|h| h.seq).next();
                    if *last_seen > entry.last_seq {
                        Some(format!(
                            "seq {last_seen} is beyond the newest ({})",
                            entry.last_seq
                        ))
                    } else if *last_seen == entry.last_seq {
                        resumed.push(id);
                        None
                    } else if oldest.is_some_and(|o| o <= last_seen + 1) {
                        // Seqs from the bus can have holes (messages this node missed while
                        // the bus was down): replay only an unbroken run.
                        let replay: Vec<_> = live.filter(|h| h.seq > *last_seen).collect();
                        let unbroken = replay
                            .iter()
                            .enumerate()
                            .all(|(i, h)| h.seq == last_seen + 1 + i as u64);
                        if unbroken {
                            frames.extend(replay.into_iter().map(|h| (h.frame.clone(), id)));
                            resumed.push(id);
                            None
                        } else {
                            Some(format!(
                                "this node missed messages after seq {last_seen} (bus outage)"
                            ))
                        }
                    } else {
                        Some(format!(
                            "history no longer reaches back to seq {}",
                            last_seen + 1
                        ))
                    }
                } else if self
                    .streams
                    .iter()
                    .any(|(_, e)| stream_key_string(&e.key) == *name)
                {
                    Some(
                        "not matched by this filter, or already subscribed on this connection"
                            .to_string(),
                    )
                } else {
                    Some("unknown stream".to_string())
                };
                if let Some(reason) = reason {
                    r.not_recovered.insert(name.clone(), reason);
                }
            }
            recovery = Some(r);
        }
        let replayed = frames.len() as u64;
        let mut snapshots = 0u64;
        if options.snapshot {
            for &id in added.iter().filter(|id| !resumed.contains(id)) {
                let newest = self.streams.get(id).and_then(|e| e.history.back());
                if let Some(h) = newest.filter(|h| ttl == 0 || now.saturating_sub(h.at_ms) <= ttl) {
                    if let Some(snap) = outbound::snapshot_frame(&h.frame) {
                        frames.push((snap, id));
                        snapshots += 1;
                    }
                }
            }
        }
        (
            recovery,
            Recovered {
                frames,
                replayed,
                snapshots,
            },
        )
    }

    /// Queues what [`Self::recover`] found on connection `key` (as routed data messages).
    pub(super) fn queue_recovered(&mut self, key: usize, r: Recovered) {
        let s = &mut self.sessions[key];
        let n = r.frames.len() as u64;
        for (frame, id) in r.frames {
            // Not timed: a replay or snapshot is old on purpose (0 = no latency sample).
            s.conn.send_data(frame, id, 0);
        }
        s.data_queued += n;
        self.stats.messages_forwarded.add(n);
        self.stats.replayed.add(r.replayed);
        self.stats.snapshots.add(r.snapshots);
    }

    /// The throttle timer of connection `key` fired at `at`: send every held message whose
    /// interval is over, and re-arm for the next.
    pub(super) fn on_throttle_timer(&mut self, key: usize, at: u64) {
        let now = self.now;
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(t) = s.throttle.as_mut() else { return };
        if t.armed_at != Some(at) {
            return;
        }
        t.armed_at = None;
        let mut due: Vec<(StreamId, DataMsg)> = Vec::new();
        let mut next: Option<u64> = None;
        for (&id, slot) in t.slots.iter_mut() {
            if slot.1.is_none() {
                continue;
            }
            let interval = self
                .streams
                .get(id)
                .map_or(0, |e| s.subs.throttle_for(&e.key)) as u64;
            if now >= slot.0 + interval {
                if let Some(m) = slot.1.take() {
                    slot.0 = now.max(1);
                    due.push((id, m));
                }
            } else {
                let d = slot.0 + interval;
                next = Some(next.map_or(d, |n: u64| n.min(d)));
            }
        }
        if let Some(d) = next {
            t.armed_at = Some(d);
            let id = s.id;
            self.arm(d, key, id, TimerKind::Throttle);
        }
        let bp = &self.cfg.backpressure;
        for (id, m) in due {
            let policy = self.streams.get(id).map_or(bp.policy, |e| e.policy);
            let s = &mut self.sessions[key];
            if let Offer::NotOpen = offer(s, &m, policy, bp, now, &self.stats) {
                s.dropped_on_close += 1;
                self.stats.dropped_on_close.inc();
            }
        }
        self.mark_dirty(key);
        self.settle(key);
    }
}
