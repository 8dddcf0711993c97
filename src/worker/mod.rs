//! A worker thread: one mio poll loop that alone owns a slab of subscriber sessions, the
//! stream → subscribers index, a timer wheel and its counters. Data arrives on its inbox;
//! everything due in a loop turn is written before the next poll.

mod colocated;
mod delivery;
mod flush;
mod lifecycle;
mod recovery;
mod requests;
pub mod session;
pub mod slots;

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use tungstenite::protocol::WebSocketConfig;

use crate::bus::{WorkerInbox, WorkerMsg};
use crate::config::Config;
use crate::net::conn::{Conn, ReadEvent};
use crate::net::listener;
use crate::net::outqueue::OutQueue;
use crate::net::uring::{SendResult, SendRing, Target};
use crate::routing::StreamTable;
use crate::shared::Shared;
use crate::stats::latency::LatencyRecorder;
use crate::stats::WorkerStats;
use crate::timer::TimerWheel;
use lifecycle::{Timer, TimerKind};
use session::Session;
use slots::Slots;

/// How many steps ahead a loop over sessions asks for a session's cache lines: a step costs
/// tens of nanoseconds, a line from memory over a hundred.
const PREFETCH_SESSION_STEPS: usize = 8;
/// How many steps ahead it asks for the output slot it will touch, whose address is read from
/// the session (by then on its way for half the distance).
const PREFETCH_SLOT_STEPS: usize = 4;

/// Prefetch hints for a loop over the sessions `keys` that is at step `i`: a session
/// [`PREFETCH_SESSION_STEPS`] ahead, and `slot` (the output slot the loop will touch) of the
/// one [`PREFETCH_SLOT_STEPS`] ahead.
#[inline]
fn prefetch_ahead(sessions: &Slots<Session>, keys: &[usize], i: usize, slot: fn(&OutQueue)) {
    if let Some(&k) = keys.get(i + PREFETCH_SESSION_STEPS) {
        sessions.prefetch(k, session::SESSION_HOT_BYTES);
    }
    if let Some(s) = keys
        .get(i + PREFETCH_SLOT_STEPS)
        .and_then(|&k| sessions.get(k))
    {
        slot(s.conn.out());
    }
}

/// Token of the worker's listener.
pub const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the worker's waker.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Most inbox messages handled in one loop turn, so sockets are served between bursts.
const MAX_INBOX_PER_TURN: usize = 65_536;
/// Delay before accepting again after an accept error (such as running out of descriptors).
const ACCEPT_RETRY_MS: u64 = 100;
/// Scratch buffer for discarding input from closing connections.
const SCRATCH_BYTES: usize = 4096;

/// tungstenite's settings for subscriber connections: small read buffer, our own write
/// queue, and the client message limit.
fn ws_config(cfg: &Config) -> WebSocketConfig {
    crate::net::conn::ws_config(cfg.limits.read_buffer_bytes, cfg.limits.max_message_bytes)
}

/// Entries of a worker's io_uring: sends per submission (a flush with more connections takes
/// several). The ring's memory is about 100 KiB per worker.
const RING_ENTRIES: u32 = 1024;

/// Worker `index`'s io_uring for its writes, or none (logged) where the kernel refuses one.
fn send_ring(index: usize) -> Option<SendRing> {
    match SendRing::new(RING_ENTRIES) {
        Ok(ring) => {
            info!("worker {index}: socket writes through io_uring");
            Some(ring)
        }
        Err(e) => {
            info!("worker {index}: no io_uring ({e}): plain send and writev calls");
            None
        }
    }
}

/// Everything a worker owns.
pub struct Worker {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    inbox: WorkerInbox,
    sessions: Slots<Session>,
    streams: StreamTable,
    dirty: Vec<usize>,
    /// Scratch of [`Self::flush_dirty`], kept to reuse the allocations (see [`reuse`]): the
    /// slices to write, each connection's socket and where its slices end, and the result of
    /// its write.
    iov_scratch: Vec<IoSlice<'static>>,
    fd_scratch: Vec<Target<'static>>,
    write_results: Vec<SendResult>,
    /// The flush's writes as one io_uring submission (`server.io_uring`), when the kernel
    /// gives a ring; plain `send`/`writev` calls without.
    ring: Option<SendRing>,
    timers: TimerWheel<Timer>,
    fired: Vec<(u64, Timer)>,
    stats: Arc<WorkerStats>,
    shared: Arc<Shared>,
    ws_config: WebSocketConfig,
    /// The configuration in force, re-read when the shared generation changes (SIGHUP).
    cfg: Arc<Config>,
    /// Subscriber token checks, when authentication is on (rebuilt with the config).
    auth: Option<crate::auth::Authenticator>,
    cfg_generation: u64,
    scratch: Vec<u8>,
    next_conn: u64,
    clock_start: Instant,
    /// Worker clock: ms since the worker started, updated after every poll.
    now: u64,
    draining: bool,
    /// The largest output queue a session of this worker ever had, in bytes.
    peak_pending: usize,
    /// Delivery latency recorded since the last housekeeping tick.
    latency: LatencyRecorder,
    /// The ingest server, when this worker serves publishers itself.
    ingest: Option<Box<crate::ingest::IngestServer>>,
}

impl Worker {
    /// A worker with its poll (whose waker is already registered as [`WAKER`]), its listener
    /// on the public address (if on) and its inbox.
    pub fn new(
        index: usize,
        poll: Poll,
        mut listener: Option<TcpListener>,
        inbox: WorkerInbox,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        let cfg = shared.config();
        let cfg_generation = shared.config_generation();
        let ws_config = ws_config(&cfg);
        let auth = crate::auth::Authenticator::from_config(&cfg.auth)
            .ok()
            .flatten();
        let stats = shared.stats.workers[index].clone();
        Ok(Worker {
            index,
            poll,
            listener,
            inbox,
            sessions: Slots::new(),
            streams: StreamTable::new(),
            dirty: Vec::new(),
            iov_scratch: Vec::new(),
            fd_scratch: Vec::new(),
            write_results: Vec::new(),
            ring: None,
            timers: TimerWheel::new(0),
            fired: Vec::new(),
            stats,
            shared,
            ws_config,
            cfg,
            auth,
            cfg_generation,
            scratch: vec![0; SCRATCH_BYTES],
            next_conn: 0,
            clock_start: Instant::now(),
            now: 0,
            draining: false,
            peak_pending: 0,
            latency: LatencyRecorder::default(),
            ingest: None,
        })
    }

    /// Makes the worker's io_uring (where the configuration asks for one and the kernel
    /// allows it) and says which way it writes in its stats. Called on the worker's own thread,
    /// before [`Worker::run`]: the kernel ties a ring to the task that makes it and, when the
    /// ring closes, notifies that task (`task_work_add` with `TWA_SIGNAL`), which makes a
    /// blocking socket call with a timeout on it fail with EINTR. Made on the thread that
    /// started the server, the notice would land there when the server stops.
    pub fn open_ring(&mut self) {
        self.ring = self
            .cfg
            .server
            .io_uring
            .then(|| send_ring(self.index))
            .flatten();
        self.stats.io_uring.set(u64::from(self.ring.is_some()));
    }

    /// Picks up a reloaded configuration (one atomic load per loop turn when nothing changed).
    fn refresh_config(&mut self) {
        let generation = self.shared.config_generation();
        if generation != self.cfg_generation {
            self.cfg_generation = generation;
            self.cfg = self.shared.config();
            self.ws_config = ws_config(&self.cfg);
            // A reload validated the config, so the authenticator builds; keep the old one if not.
            if let Ok(auth) = crate::auth::Authenticator::from_config(&self.cfg.auth) {
                self.auth = auth;
            }
        }
    }

    /// Reads the clock once for the turn: the worker's ms, and the loop's heartbeat for the
    /// stall check (on the process's monotonic clock).
    fn tick_clock(&mut self) {
        let t = Instant::now();
        self.now = t.saturating_duration_since(self.clock_start).as_millis() as u64;
        self.stats.last_turn_ms.set(crate::clock::mono_ms_at(t));
    }

    /// Runs the loop until shutdown: on a drain request it stops accepting, closes every
    /// session with 1001 and returns when they are gone or the grace period is over.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut backlog = false;
        self.start_housekeeping();
        self.stats.last_turn_ms.set(crate::clock::mono_ms());
        info!("worker {} started", self.index);
        loop {
            if self.shared.is_stopped() {
                break;
            }
            if self.serves_ingest() && self.shared.ingest_draining() {
                self.ingest_turn();
            }
            if !self.draining && self.shared.workers_draining() {
                self.begin_drain();
            }
            if self.draining {
                let over = self
                    .shared
                    .grace_deadline()
                    .is_none_or(|d| Instant::now() >= d);
                if (self.sessions.is_empty() && !self.serves_ingest()) || over {
                    break;
                }
            }
            let timeout = self.poll_timeout(backlog);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if crate::net::interrupted(&e) {
                    continue;
                }
                self.shared
                    .record_error(format!("worker {}: poll failed: {e}", self.index));
                break;
            }
            self.tick_clock();
            self.refresh_config();
            self.stats.loop_turns.inc();
            backlog = false;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        self.inbox.rearm();
                        backlog = self.drain_inbox();
                    }
                    t if colocated::is_ingest(t) => {
                        self.ingest_event(t);
                        backlog = true;
                    }
                    Token(k) => {
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        self.on_conn_event(k, readable, ev.is_writable())
                    }
                }
            }
            if backlog {
                backlog = self.drain_inbox();
            }
            self.run_timers();
            self.flush_dirty();
        }
        self.stats.last_turn_ms.set(0);
        self.report_unfinished();
    }

    fn poll_timeout(&self, backlog: bool) -> Option<Duration> {
        if backlog {
            return Some(Duration::ZERO);
        }
        let mut t = self
            .timers
            .next_timeout(self.clock_start.elapsed().as_millis() as u64);
        if let Some(d) = self.shared.grace_deadline().filter(|_| self.draining) {
            let left = d.saturating_duration_since(Instant::now());
            t = Some(t.map_or(left, |t| t.min(left)));
        }
        t
    }

    fn accept_all(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        let (index, now) = (self.index, self.now);
        let burst = self.cfg.limits.message_burst;
        let handshake_ms = self.cfg.heartbeat.handshake_timeout_ms;
        let (next_conn, timers) = (&mut self.next_conn, &mut self.timers);
        let who = format!("worker {index}");
        let sndbuf = self.cfg.server.send_buffer_bytes;
        let (admission, limits) = (&self.shared.admission, &self.cfg.limits);
        let wall_ms = crate::shared::now_ms();
        let (n, err) = listener::accept_into(
            listener,
            self.poll.registry(),
            0,
            &mut self.sessions,
            &who,
            // WRITABLE only while output is pending (see flush_dirty): a write-ready event per
            // write would cost an epoll wakeup per delivery.
            Interest::READABLE,
            |key, sock, peer| {
                listener::set_send_buffer(&sock, sndbuf);
                *next_conn += 1;
                let id = ((index as u64) << 48) | *next_conn;
                let at = now + handshake_ms;
                timers.insert(at, Timer::new(key, id, TimerKind::Handshake));
                debug!("conn {id} accepted from {peer} on worker {index}");
                let mut s = Session::new(Conn::new(sock, peer), id, burst, now);
                s.refused = admission
                    .socket_opened(peer.ip(), wall_ms, limits)
                    .err()
                    .map(|r| r.0.into_boxed_str());
                s
            },
        );
        self.stats.connections_accepted.add(n as u64);
        self.stats.connections_active.add(n as u64);
        if let Some(e) = err {
            // EMFILE and friends: what is left in the backlog raises no new event, so retry
            // on a timer.
            self.shared
                .record_error(format!("worker {}: accept failed: {e}", self.index));
            let at = self.now + ACCEPT_RETRY_MS;
            let t = Timer::new(delivery::WORKER_KEY, 0, TimerKind::AcceptRetry);
            self.timers.insert(at, t);
        }
    }

    /// Handles inbox messages; returns whether some were left for the next turn.
    fn drain_inbox(&mut self) -> bool {
        for _ in 0..MAX_INBOX_PER_TURN {
            match self.inbox.rx.try_recv() {
                Ok(WorkerMsg::Data(msg)) => self.fan_out(msg),
                Ok(WorkerMsg::Flush(reply)) => {
                    let keys: Vec<usize> = self
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.conn.needs_flush())
                        .map(|(k, _)| k)
                        .collect();
                    for k in keys {
                        self.mark_dirty(k);
                    }
                    let _ = reply.send(self.flush_dirty());
                }
                Ok(WorkerMsg::Replace { conn }) => self.replace(conn),
                Ok(WorkerMsg::EpochReset) => self.epoch_reset(),
                Ok(WorkerMsg::Stall(d)) => {
                    warn!(
                        "worker {}: stalling for {d:?} (fault injection)",
                        self.index
                    );
                    std::thread::sleep(d);
                }
                Err(_) => return false,
            }
        }
        true
    }

    fn on_conn_event(&mut self, key: usize, readable: bool, writable: bool) {
        if readable {
            self.read_all(key);
        }
        if writable {
            self.mark_dirty(key);
        }
        self.settle(key);
    }

    /// Reads and handles everything the socket has (edge-triggered: until it would block).
    fn read_all(&mut self, key: usize) {
        let max_head = self.cfg.limits.max_request_head_bytes;
        loop {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            let event = s.conn.read_event(max_head, &mut self.scratch);
            if matches!(event, ReadEvent::Message(_)) {
                s.last_rx_ms = self.now;
            }
            match event {
                ReadEvent::WouldBlock => return,
                ReadEvent::Closed => {
                    if s.upgraded && !s.conn.is_closing() && s.close.is_none() {
                        s.note_close(1006, "connection lost without a close frame", true);
                        self.stats.closed_io_error.inc();
                    }
                    return;
                }
                ReadEvent::Head(head) => self.route_http(key, head),
                ReadEvent::Rejected(_) => self.stats.http_requests.inc(),
                ReadEvent::Message(msg) => self.on_message(key, msg),
                ReadEvent::Failed(code, reason) => self.fail(key, code, &reason),
            }
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(s) = self.sessions.get_mut(key) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// After a session was handled: schedule a write if it has output, arm the close deadline
    /// if a close began, and drop it if it is finished.
    fn settle(&mut self, key: usize) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        // An open connection is neither done nor closing: the delivery path reads one flag.
        if !s.conn.is_open() {
            if s.conn.is_done() {
                return self.remove(key);
            }
            if s.conn.is_closing() && !s.close_armed {
                s.close_armed = true;
                let (id, at) = (s.id, self.now + self.cfg.heartbeat.close_timeout_ms);
                self.arm(at, key, id, TimerKind::CloseWait);
            }
        }
        if self.sessions[key].conn.needs_flush() {
            self.mark_dirty(key);
        }
    }

    fn remove(&mut self, key: usize) {
        if !self.sessions.contains(key) {
            return;
        }
        let mut s = self.sessions.remove(key);
        self.shared.admission.socket_closed(s.conn.peer.ip());
        if let Some(a) = &s.auth {
            let me = crate::admission::UserConn {
                worker: self.index,
                conn: s.id,
            };
            self.shared.admission.unregister_user(&a.user, me);
        }
        let held = s.throttle.as_ref().map_or(0, |t| t.held()) as u64;
        s.dropped_on_close += held;
        self.stats.dropped_on_close.add(held);
        let unwritten = s.conn.out_mut().clear();
        s.dropped_on_close += unwritten.frames as u64;
        self.stats.dropped_on_close.add(unwritten.frames as u64);
        if s.subs.filter_count() > 0 {
            self.stats
                .subscriptions_active
                .sub(s.subs.filter_count() as u64);
        }
        s.subs.clear(&mut self.streams, key);
        let _ = self.poll.registry().deregister(s.conn.socket());
        let lived_ms = self.now.saturating_sub(s.opened_at);
        self.stats.connections_active.sub(1);
        if s.upgraded {
            self.stats.websockets_active.sub(1);
        }
        self.stats.connections_closed.inc();
        self.stats.closed_duration_ms.add(lived_ms);
        let close = s.close.take().map(|c| *c).unwrap_or_default();
        let level = if close.abnormal {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "conn {} from {} closed after {lived_ms} ms: code {} ({}), in {} msgs/{} B, out {} frames/{} B",
            s.id,
            s.conn.peer,
            close.code,
            if close.reason.is_empty() { "closed" } else { &close.reason },
            s.messages_in,
            s.conn.bytes_in(),
            s.frames_out,
            s.bytes_out
        );
    }
}
