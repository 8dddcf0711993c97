//! Connection lifecycle on the worker's timer wheel: handshake deadline, heartbeats, maximum
//! lifetime, close-handshake deadline, batch flushes, and the graceful drain at shutdown.
//!
//! Cancellation is lazy: a timer names its session by slab key and connection id, and on
//! expiry the handler checks that the session still exists and that the timer still applies
//! (for heartbeats: whether the client spoke since), re-arming instead of cancelling. So a
//! message from a client costs no timer operation at all.

use log::{debug, info, warn};

use super::Worker;
use crate::protocol::CloseCode;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// The upgrade must be done by now.
    Handshake,
    /// Check for silence: send a ping, or close after an unanswered one.
    Heartbeat,
    /// `limits.max_lifetime_ms` (plus jitter) reached.
    Lifetime,
    /// The close handshake must be done by now.
    CloseWait,
    /// The batch window of the session's queued data ends.
    Batch,
    /// Worker-level: gauges and the memory guard.
    Housekeeping,
    /// Worker-level: accept again after an accept error.
    AcceptRetry,
    /// The session's token expires (unless it was refreshed since).
    TokenExpiry,
    /// Held throttled messages are due.
    Throttle,
}

/// A timer entry: which session (slab key + connection id, so a reused key is not confused)
/// and what for. 16 bytes: every connection has one or two of these pending.
#[derive(Debug, Clone, Copy)]
pub struct Timer {
    /// Connection id at arming time.
    pub conn: u64,
    /// Slab key (`u32::MAX` for worker-level timers).
    key: u32,
    /// Purpose.
    pub kind: TimerKind,
}

impl Timer {
    /// A timer for slab key `key` (connection `conn`).
    pub fn new(key: usize, conn: u64, kind: TimerKind) -> Timer {
        Timer {
            conn,
            key: u32::try_from(key).unwrap_or(u32::MAX),
            kind,
        }
    }

    /// The slab key.
    pub fn key(&self) -> usize {
        if self.key == u32::MAX {
            usize::MAX
        } else {
            self.key as usize
        }
    }
}

/// A pseudo-random jitter in [0, max) from a connection id (splitmix64), so lifetimes spread.
fn jitter(id: u64, max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % max
}

impl Worker {
    /// Adds a timer for session `key` (connection `conn`).
    pub(super) fn arm(&mut self, at: u64, key: usize, conn: u64, kind: TimerKind) {
        self.timers.insert(at, Timer::new(key, conn, kind));
    }

    /// Arms the heartbeat and lifetime timers of a session that just upgraded.
    pub(super) fn on_upgraded(&mut self, key: usize) {
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let id = s.id;
        let hb = &self.cfg.heartbeat;
        self.arm(
            self.now + hb.ping_interval_ms,
            key,
            id,
            TimerKind::Heartbeat,
        );
        let life = self.cfg.limits.max_lifetime_ms;
        if life > 0 {
            let at = self.now + life + jitter(id, life / 10 + 1);
            self.arm(at, key, id, TimerKind::Lifetime);
        }
    }

    /// Arms the token-expiry timer of a session (when it has a token).
    pub(super) fn arm_token_expiry(&mut self, key: usize) {
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let Some(expires_ms) = s.auth.as_ref().map(|a| a.expires_ms) else {
            return;
        };
        let left = expires_ms.saturating_sub(crate::shared::now_ms());
        let (id, at) = (s.id, self.now + left);
        self.arm(at, key, id, TimerKind::TokenExpiry);
    }

    /// Closes connection `conn` with 4002: a newer connection of its user replaced it.
    pub(super) fn replace(&mut self, conn: u64) {
        let Some(key) = self
            .sessions
            .iter()
            .find(|(_, s)| s.id == conn)
            .map(|(k, _)| k)
        else {
            return;
        };
        let s = &mut self.sessions[key];
        if !s.conn.is_closing() {
            self.stats.closed_replaced.inc();
            s.note_close(4002, "replaced by a newer connection", false);
            s.conn
                .close(CloseCode::Replaced, "replaced by a newer connection");
        }
        self.settle(key);
    }

    /// A new epoch began on the bus: every stream's seq and history are forgotten and every
    /// subscriber is closed with 1012, so that it subscribes again (its seqs would not
    /// compare with the new ones).
    pub(super) fn epoch_reset(&mut self) {
        let freed = self.streams.reset_seqs();
        self.stats.history_bytes.sub(freed as u64);
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        let mut closed = 0;
        for &k in &keys {
            let s = &mut self.sessions[k];
            if s.conn.in_handshake() || s.conn.is_closing() {
                continue;
            }
            closed += 1;
            self.stats.closed_restart.inc();
            s.note_close(1012, "the feed's epoch changed: subscribe again", false);
            s.conn
                .close(CloseCode::Restart, "epoch changed: subscribe again");
            self.mark_dirty(k);
        }
        let _ = self.flush_dirty();
        for k in keys {
            self.settle(k);
        }
        info!(
            "worker {}: new epoch {}, close 1012 sent to {closed} connections",
            self.index,
            self.shared.epoch()
        );
    }

    /// Runs every timer due now.
    pub(super) fn run_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.expire(self.now, &mut fired);
        for (at, t) in fired.drain(..) {
            self.on_timer(t, at);
        }
        self.fired = fired;
    }

    fn on_timer(&mut self, t: Timer, at: u64) {
        let key = t.key();
        match t.kind {
            TimerKind::Housekeeping => {
                // The ingest side's sweep (deadlines, the publisher list) and drain.
                if self.serves_ingest() && self.ingest_turn() {
                    while self.drain_inbox() {}
                }
                return self.housekeeping();
            }
            TimerKind::AcceptRetry => return self.accept_all(),
            _ => {}
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.id != t.conn || s.conn.is_done() {
            return;
        }
        let hb = &self.cfg.heartbeat;
        match t.kind {
            TimerKind::Handshake => {
                if s.conn.in_handshake() {
                    self.stats.closed_handshake_timeout.inc();
                    s.note_close(0, "handshake timeout", true);
                    s.conn.kill();
                }
            }
            TimerKind::Heartbeat => {
                if s.conn.is_closing() {
                    return;
                }
                let idle_until = s.last_rx_ms + hb.ping_interval_ms;
                match s.ping_sent_ms {
                    Some(sent) if s.last_rx_ms >= sent => {
                        // The client spoke after our ping: back to watching for silence.
                        s.ping_sent_ms = None;
                        let (id, at) = (s.id, idle_until);
                        self.arm(at, key, id, TimerKind::Heartbeat);
                    }
                    Some(sent) if self.now >= sent + hb.pong_timeout_ms => {
                        self.stats.closed_heartbeat_timeout.inc();
                        s.note_close(1001, "heartbeat timeout", true);
                        s.conn.close(CloseCode::GoingAway, "heartbeat timeout");
                    }
                    Some(sent) => {
                        let (id, at) = (s.id, sent + hb.pong_timeout_ms);
                        self.arm(at, key, id, TimerKind::Heartbeat);
                    }
                    None if self.now >= idle_until => {
                        if s.conn.ping() {
                            self.stats.pings_sent.inc();
                            s.ping_sent_ms = Some(self.now);
                            let (id, at) = (s.id, self.now + hb.pong_timeout_ms);
                            self.arm(at, key, id, TimerKind::Heartbeat);
                        }
                    }
                    None => {
                        let id = s.id;
                        self.arm(idle_until, key, id, TimerKind::Heartbeat);
                    }
                }
            }
            TimerKind::Lifetime => {
                if !s.conn.is_closing() {
                    self.stats.closed_lifetime.inc();
                    s.note_close(1001, "maximum connection lifetime reached", false);
                    s.conn
                        .close(CloseCode::GoingAway, "maximum connection lifetime reached");
                }
            }
            TimerKind::CloseWait => {
                self.stats.closed_close_timeout.inc();
                s.note_close(0, "close handshake timeout", true);
                s.conn.kill();
            }
            TimerKind::Batch => {
                if s.batch_count > 0 && s.batch_deadline == at {
                    self.mark_dirty(key);
                }
            }
            TimerKind::TokenExpiry => {
                let now_wall = crate::shared::now_ms();
                if s.conn.is_closing() {
                    return;
                }
                let expires_ms = s.auth.as_ref().map_or(0, |a| a.expires_ms);
                if expires_ms <= now_wall {
                    self.stats.closed_token_expired.inc();
                    s.note_close(1008, "token expired", true);
                    s.conn.close(CloseCode::Policy, "token expired");
                } else {
                    // Refreshed: wait for the new expiry.
                    let (id, at) = (s.id, self.now + (expires_ms - now_wall));
                    self.arm(at, key, id, TimerKind::TokenExpiry);
                }
            }
            TimerKind::Throttle => return self.on_throttle_timer(key, at),
            TimerKind::Housekeeping | TimerKind::AcceptRetry => {}
        }
        self.settle(key);
    }

    /// Starts the graceful drain: stop accepting, deliver what is already in the inbox, then
    /// close every session with 1001 (sockets still mid-handshake are dropped).
    pub(super) fn begin_drain(&mut self) {
        self.draining = true;
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        while self.drain_inbox() {}
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        let n = keys.len();
        for &k in &keys {
            let s = &mut self.sessions[k];
            if s.conn.in_handshake() {
                s.note_close(0, "server shutting down", false);
                s.conn.kill();
            } else if !s.conn.is_closing() {
                self.stats.closed_shutdown.inc();
                s.note_close(1001, "server shutting down", false);
                s.conn.close(CloseCode::GoingAway, "server shutting down");
            }
            self.mark_dirty(k);
        }
        let _ = self.flush_dirty();
        for k in keys {
            self.settle(k);
        }
        info!(
            "worker {}: draining, close 1001 sent to {n} connections",
            self.index
        );
    }

    /// Logs what was still open when the loop ended.
    pub(super) fn report_unfinished(&mut self) {
        let left = self.sessions.len();
        if left == 0 {
            info!("worker {} stopped", self.index);
            return;
        }
        let pending: usize = self
            .sessions
            .iter()
            .map(|(_, s)| s.conn.out().pending_bytes())
            .sum();
        warn!(
            "worker {} stopped with {left} connections still closing ({pending} bytes unsent)",
            self.index
        );
        for (_, s) in self.sessions.iter() {
            debug!("conn {} from {} still open at exit", s.id, s.conn.peer);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let vals: Vec<u64> = (0..1000).map(|id| super::jitter(id, 100)).collect();
        assert!(vals.iter().all(|&v| v < 100));
        let distinct: std::collections::HashSet<_> = vals.iter().collect();
        assert!(distinct.len() > 50);
        assert_eq!(super::jitter(5, 0), 0);
    }
}
