//! A worker thread: one mio poll loop that alone owns a slab of subscriber sessions, the
//! stream → subscribers index, and its counters. Data arrives on its inbox; everything queued
//! in a loop turn is written before the next poll.

mod requests;
pub mod session;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tungstenite::protocol::WebSocketConfig;

use crate::bus::{DataMsg, WorkerInbox, WorkerMsg};
use crate::net::conn::{Conn, ReadEvent};
use crate::routing::StreamTable;
use crate::shared::{now_ms, Shared};
use crate::stats::WorkerStats;
use session::Session;

/// Token of the worker's listener.
pub const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the worker's waker.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Most inbox messages handled in one loop turn, so sockets are served between bursts.
const MAX_INBOX_PER_TURN: usize = 65_536;
/// Scratch buffer for discarding input from closing connections.
const SCRATCH_BYTES: usize = 4096;

/// Everything a worker owns.
pub struct Worker {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    inbox: WorkerInbox,
    sessions: Slab<Session>,
    streams: StreamTable,
    dirty: Vec<usize>,
    stats: Arc<WorkerStats>,
    shared: Arc<Shared>,
    ws_config: WebSocketConfig,
    scratch: Vec<u8>,
    next_conn: u64,
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
        let limits = &shared.config.limits;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(limits.read_buffer_bytes)
            .write_buffer_size(0)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(limits.max_message_bytes))
            .max_frame_size(Some(limits.max_message_bytes));
        Ok(Worker {
            index,
            poll,
            listener,
            inbox,
            sessions: Slab::new(),
            streams: StreamTable::new(),
            dirty: Vec::new(),
            stats: shared.stats.workers[index].clone(),
            shared,
            ws_config,
            scratch: vec![0; SCRATCH_BYTES],
            next_conn: 0,
        })
    }

    /// Runs the loop until shutdown is requested.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut backlog = false;
        info!("worker {} started", self.index);
        while !self.shared.is_shutting_down() {
            let timeout = if backlog { Some(Duration::ZERO) } else { None };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if crate::net::interrupted(&e) {
                    continue;
                }
                warn!("worker {}: poll failed: {e}", self.index);
                break;
            }
            self.stats.loop_turns.inc();
            backlog = false;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        self.inbox.rearm();
                        backlog = self.drain_inbox();
                    }
                    Token(k) => self.on_conn_event(k, ev.is_writable()),
                }
            }
            if backlog {
                backlog = self.drain_inbox();
            }
            self.flush_dirty();
        }
        let open = self.sessions.len();
        info!("worker {} stopped with {open} connections", self.index);
    }

    fn accept_all(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let entry = self.sessions.vacant_entry();
                    let key = entry.key();
                    if let Err(e) = self.poll.registry().register(
                        &mut sock,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!("worker {}: register failed: {e}", self.index);
                        continue;
                    }
                    self.next_conn += 1;
                    let id = ((self.index as u64) << 48) | self.next_conn;
                    let burst = self.shared.config.limits.message_burst;
                    entry.insert(Session::new(Conn::new(sock, peer), id, burst, now_ms()));
                    self.stats.connections_accepted.inc();
                    self.stats.connections_active.inc();
                    debug!("conn {id} accepted from {peer} on worker {}", self.index);
                }
                Err(e) if crate::net::would_block(&e) => break,
                Err(e) if crate::net::interrupted(&e) => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog for the next event.
                    warn!("worker {}: accept failed: {e}", self.index);
                    break;
                }
            }
        }
    }

    /// Handles inbox messages; returns whether some were left for the next turn.
    fn drain_inbox(&mut self) -> bool {
        for _ in 0..MAX_INBOX_PER_TURN {
            match self.inbox.rx.try_recv() {
                Ok(WorkerMsg::Data(msg)) => self.fan_out(msg),
                Err(_) => return false,
            }
        }
        true
    }

    fn fan_out(&mut self, msg: DataMsg) {
        self.stats.data_in.inc();
        if !self.streams.contains(msg.stream) {
            let mut subscribers = Vec::new();
            for (k, s) in self.sessions.iter_mut() {
                if s.subs.matches(&msg.key) {
                    subscribers.push(k);
                    s.subs.note_new_stream(msg.stream);
                }
            }
            self.streams
                .insert(msg.stream, msg.key.clone(), subscribers);
        }
        let Some(entry) = self.streams.get(msg.stream) else {
            return;
        };
        for &k in &entry.subscribers {
            let Some(s) = self.sessions.get_mut(k) else {
                continue;
            };
            if s.conn.send(msg.frame.clone()) {
                s.data_queued += 1;
                if !s.dirty {
                    s.dirty = true;
                    self.dirty.push(k);
                }
            }
        }
        self.stats
            .messages_forwarded
            .add(entry.subscribers.len() as u64);
    }

    fn on_conn_event(&mut self, key: usize, writable: bool) {
        let max_head = self.shared.config.limits.max_request_head_bytes;
        loop {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            match s.conn.read_event(max_head, &mut self.scratch) {
                ReadEvent::WouldBlock | ReadEvent::Closed => break,
                ReadEvent::Head(head) => self.route_http(key, head),
                ReadEvent::Rejected(_) => self.stats.http_requests.inc(),
                ReadEvent::Message(msg) => self.on_message(key, msg),
                ReadEvent::Failed(code, reason) => self.fail(key, code, &reason),
            }
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if (writable || !s.conn.out().is_empty()) && !s.dirty {
            s.dirty = true;
            self.dirty.push(key);
        }
        if s.conn.is_done() {
            self.remove(key, "closed");
        }
    }

    /// Writes every connection that has pending output (one `writev` per connection when the
    /// socket takes it all), then drops connections that are finished.
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &k in &dirty {
            let Some(s) = self.sessions.get_mut(k) else {
                continue;
            };
            if !s.dirty {
                continue;
            }
            s.dirty = false;
            match s.conn.flush() {
                Ok(r) => {
                    s.frames_out += r.frames as u64;
                    s.bytes_out += r.bytes as u64;
                    self.stats.frames_written.add(r.frames as u64);
                    self.stats.bytes_written.add(r.bytes as u64);
                    self.stats.write_syscalls.add(r.syscalls as u64);
                    if s.conn.is_done() {
                        self.remove(k, "closed");
                    }
                }
                Err(e) => {
                    self.stats.closed_io_error.inc();
                    debug!("conn {} write failed: {e}", s.id);
                    self.remove(k, "write error");
                }
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn remove(&mut self, key: usize, why: &str) {
        if !self.sessions.contains(key) {
            return;
        }
        let mut s = self.sessions.remove(key);
        if s.subs.filter_count() > 0 {
            self.stats
                .subscriptions_active
                .sub(s.subs.filter_count() as u64);
        }
        s.subs.clear(&mut self.streams, key);
        let _ = self.poll.registry().deregister(s.conn.socket());
        let lived_ms = s.opened.elapsed().as_millis() as u64;
        self.stats.connections_active.sub(1);
        if s.upgraded {
            self.stats.websockets_active.sub(1);
        }
        self.stats.connections_closed.inc();
        self.stats.closed_duration_ms.add(lived_ms);
        debug!(
            "conn {} from {} {why} after {lived_ms} ms: in {} msgs/{} B, out {} frames/{} B",
            s.id,
            s.conn.peer,
            s.messages_in,
            s.conn.bytes_in(),
            s.frames_out,
            s.bytes_out
        );
    }
}
