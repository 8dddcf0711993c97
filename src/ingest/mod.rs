//! Ingest: the `/publish` WebSocket listener for publishers (its own thread and mio loop),
//! validation with error replies, and the sequencer that hands data to the workers.

pub mod dispatch;
pub mod sink;

use std::io;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

use crate::config::Config;
use crate::net::conn::{Conn, ReadEvent};
use crate::net::sweep::{SweepClock, SWEEP_INTERVAL};
use crate::net::{http, listener};
use crate::protocol::publish::parse_publish;
use crate::protocol::{outbound, CloseCode, ErrorCode};
use crate::shared::{now_ms, Shared};
use crate::stats::PublisherInfo;
pub use dispatch::{DispatchError, Dispatcher};
pub use sink::Sink;

/// Token of the ingest listener.
const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the ingest thread's waker (shutdown).
pub const WAKER: Token = Token(usize::MAX - 2);

struct Publisher {
    conn: Conn,
    clock: SweepClock,
    id: u64,
    upgraded: bool,
    accepted: u64,
    rejected: u64,
    bytes_out: u64,
}

/// tungstenite's settings for publisher connections: batches up to `limits.max_publish_bytes`.
fn publisher_ws_config(cfg: &Config) -> WebSocketConfig {
    // tungstenite zeroes the free part of its read buffer before every read: keep it small
    // (a larger frame still gets room for its whole length).
    crate::net::conn::ws_config(2 * 1024, cfg.limits.max_publish_bytes)
}

/// Where the ingest side's sockets are registered.
pub enum Placement {
    /// Its own thread and poll, whose waker is already registered as [`WAKER`].
    Thread(Poll),
    /// The poll of the worker that serves it: the listener under `listener`, publisher `k`
    /// under `base + k`. Their events reach [`IngestServer::on_token`] from the worker's loop,
    /// with no poll of its own in between.
    Worker {
        /// The worker poll's registry.
        registry: Registry,
        /// The listener's token.
        listener: Token,
        /// The first publisher token.
        base: usize,
    },
}

/// The ingest side's state: on its own thread, or served by a worker.
pub struct IngestServer {
    /// Its own poll, when on its own thread.
    poll: Option<Poll>,
    registry: Registry,
    listener_token: Token,
    token_base: usize,
    listener: Option<TcpListener>,
    publishers: Slab<Publisher>,
    sink: Sink,
    shared: Arc<Shared>,
    ws_config: WebSocketConfig,
    /// The configuration in force, re-read when the shared generation changes (SIGHUP).
    cfg: Arc<Config>,
    cfg_generation: u64,
    scratch: Vec<u8>,
    next_id: u64,
    draining: bool,
    last_sweep: Instant,
}

impl IngestServer {
    /// An ingest server on `listener`, registered where `placement` says.
    pub fn new(
        placement: Placement,
        mut listener: TcpListener,
        sink: Sink,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let (poll, registry, listener_token, token_base) = match placement {
            Placement::Thread(poll) => {
                let registry = poll.registry().try_clone()?;
                (Some(poll), registry, LISTENER, 0)
            }
            Placement::Worker {
                registry,
                listener,
                base,
            } => (None, registry, listener, base),
        };
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        let cfg = shared.config();
        let cfg_generation = shared.config_generation();
        let ws_config = publisher_ws_config(&cfg);
        Ok(IngestServer {
            poll,
            registry,
            listener_token,
            token_base,
            listener: Some(listener),
            publishers: Slab::new(),
            sink,
            shared,
            ws_config,
            cfg,
            cfg_generation,
            scratch: vec![0; 4096],
            next_id: 0,
            draining: false,
            last_sweep: Instant::now(),
        })
    }

    /// Runs on its own thread until shutdown: on a drain request it stops accepting, closes
    /// every publisher with 1001 and returns when they are gone or the grace period is over.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            if self.shared.is_stopped() {
                break;
            }
            self.check_drain();
            if self.finished() {
                break;
            }
            let mut timeout = Some(SWEEP_INTERVAL);
            if self.draining {
                let deadline = self.shared.grace_deadline().unwrap_or_else(Instant::now);
                let left = deadline.saturating_duration_since(Instant::now());
                timeout = Some(left.min(SWEEP_INTERVAL));
            }
            if !self.turn(&mut events, timeout) {
                break;
            }
        }
        self.report_stop();
    }

    /// Starts the drain once shutdown asks for it (phase 1).
    pub fn check_drain(&mut self) {
        if !self.draining && self.shared.ingest_draining() {
            self.draining = true;
            self.begin_drain();
        }
    }

    /// Whether a drain is over: every publisher gone, or the grace period spent.
    pub fn finished(&self) -> bool {
        if !self.draining {
            return false;
        }
        let over = self
            .shared
            .grace_deadline()
            .is_none_or(|d| Instant::now() >= d);
        self.publishers.is_empty() || over
    }

    /// Logs how the ingest side ended.
    pub fn report_stop(&self) {
        match self.publishers.len() {
            0 => info!("ingest stopped"),
            n => warn!("ingest stopped with {n} publishers that did not finish closing"),
        }
    }

    /// One pass of the ingest thread: waits up to `timeout` for events on its own poll,
    /// handles them, and sweeps when due. Returns false when the poll failed (the ingest side
    /// cannot go on) or there is no own poll (a worker serves it).
    pub fn turn(&mut self, events: &mut Events, timeout: Option<Duration>) -> bool {
        let Some(poll) = self.poll.as_mut() else {
            return false;
        };
        if let Err(e) = crate::net::poll_events(poll, events, timeout) {
            warn!("ingest: poll failed: {e}");
            return false;
        }
        for ev in events.iter() {
            if ev.token() != WAKER {
                self.on_token(ev.token());
            }
        }
        self.sweep_if_due();
        true
    }

    /// Handles the readiness of the listener or a publisher socket (the token it was
    /// registered under).
    pub fn on_token(&mut self, token: Token) {
        let generation = self.shared.config_generation();
        if generation != self.cfg_generation {
            self.cfg_generation = generation;
            self.cfg = self.shared.config();
            self.ws_config = publisher_ws_config(&self.cfg);
        }
        if token == self.listener_token {
            self.accept_all();
        } else if let Some(key) = token.0.checked_sub(self.token_base) {
            self.on_event(key);
        }
    }

    /// Sweeps when [`SWEEP_INTERVAL`] has passed since the last sweep.
    pub fn sweep_if_due(&mut self) {
        if self.last_sweep.elapsed() >= SWEEP_INTERVAL {
            self.last_sweep = Instant::now();
            self.sweep();
        }
    }

    /// Every [`SWEEP_INTERVAL`]: accepts anything an accept error left in the backlog, drops
    /// publisher sockets past their handshake or close deadline, and publishes the publisher
    /// list for `/stats`.
    fn sweep(&mut self) {
        self.accept_all();
        self.publish_list();
        let hb = &self.cfg.heartbeat;
        let handshake = Duration::from_millis(hb.handshake_timeout_ms);
        let close = Duration::from_millis(hb.close_timeout_ms);
        let now = Instant::now();
        let mut expired = Vec::new();
        for (k, p) in self.publishers.iter_mut() {
            if let Some(why) = p.clock.check(&p.conn, now, handshake, close) {
                info!("publisher {} from {} dropped: {why}", p.id, p.conn.peer);
                p.conn.kill();
                expired.push(k);
            }
        }
        for k in expired {
            self.settle(k);
        }
    }

    /// Publishes the publisher list and counters for `/stats` (on each sweep, and when a
    /// publisher comes or goes).
    fn publish_list(&self) {
        let list = self
            .publishers
            .iter()
            .filter(|(_, p)| p.upgraded)
            .map(|(_, p)| PublisherInfo {
                id: p.id,
                peer: p.conn.peer.to_string(),
                connected_ms: p.clock.age().as_millis() as u64,
                accepted: p.accepted,
                rejected: p.rejected,
            })
            .collect();
        *self
            .shared
            .stats
            .ingest
            .publishers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = list;
    }

    fn begin_drain(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.registry.deregister(&mut l);
        }
        let keys: Vec<usize> = self.publishers.iter().map(|(k, _)| k).collect();
        info!(
            "ingest: draining, close 1001 sent to {} publishers",
            keys.len()
        );
        for k in keys {
            let p = &mut self.publishers[k];
            if p.conn.in_handshake() {
                p.conn.kill();
            } else {
                p.conn.close(CloseCode::GoingAway, "server shutting down");
            }
            self.settle(k);
        }
    }

    fn accept_all(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        let next_id = &mut self.next_id;
        let (_, err) = listener::accept_into(
            listener,
            &self.registry,
            self.token_base,
            &mut self.publishers,
            "ingest",
            Interest::READABLE | Interest::WRITABLE,
            |_, sock, peer| {
                *next_id += 1;
                debug!("publisher {} connected from {peer}", *next_id);
                let mut conn = Conn::new(sock, peer);
                if let Err(e) = conn.count_unread() {
                    debug!(
                        "publisher {}: no TCP_INQ ({e}): reads go on to EAGAIN",
                        *next_id
                    );
                }
                Publisher {
                    conn,
                    clock: SweepClock::new(),
                    id: *next_id,
                    upgraded: false,
                    accepted: 0,
                    rejected: 0,
                    bytes_out: 0,
                }
            },
        );
        if let Some(e) = err {
            // Retried at the next sweep: what is left in the backlog raises no new event.
            self.shared
                .record_error(format!("ingest: accept failed: {e}"));
        }
    }

    fn on_event(&mut self, key: usize) {
        let max_head = self.cfg.limits.max_request_head_bytes;
        if let Some(p) = self.publishers.get_mut(key) {
            p.conn.on_readable();
        }
        loop {
            let Some(p) = self.publishers.get_mut(key) else {
                return;
            };
            match p.conn.read_event(max_head, &mut self.scratch) {
                ReadEvent::WouldBlock | ReadEvent::Closed => break,
                ReadEvent::Rejected(_) => {}
                ReadEvent::Head(head) => {
                    if head.path != "/publish" {
                        p.conn.respond(http::error_response(404, "not found"));
                        continue;
                    }
                    match http::check_upgrade(&head) {
                        Ok(_) if !crate::auth::publisher_allowed(&self.cfg.auth, &head) => {
                            info!(
                                "publisher {} from {} refused: no valid token",
                                p.id, p.conn.peer
                            );
                            let body = b"a valid publisher token is required\n";
                            let extra = [("WWW-Authenticate", "Bearer")];
                            p.conn.respond(http::response(
                                401,
                                "text/plain; charset=utf-8",
                                body,
                                &extra,
                            ));
                        }
                        Ok(ws_key) => {
                            let ws_key = ws_key.to_string();
                            p.conn.upgrade(&head, &ws_key, self.ws_config);
                            p.upgraded = true;
                            self.shared.stats.ingest.publishers_active.inc();
                            self.shared.stats.ingest.publishers_accepted.inc();
                            info!("publisher {} from {} open", p.id, p.conn.peer);
                            self.publish_list();
                        }
                        Err((status, msg)) => p.conn.respond(http::error_response(status, msg)),
                    }
                }
                ReadEvent::Message(Message::Text(text)) => self.on_frame(key, text.as_str()),
                ReadEvent::Message(Message::Binary(_)) => self.reject(
                    key,
                    ErrorCode::InvalidMessage,
                    "send JSON text frames",
                    None,
                ),
                ReadEvent::Message(_) => {}
                ReadEvent::Failed(code, reason) => {
                    if code == CloseCode::TooBig {
                        self.reject(key, ErrorCode::MessageTooLarge, &reason, None);
                    }
                    let short: String = reason.chars().take(100).collect();
                    self.publishers[key].conn.fail(code, &short);
                }
            }
        }
        self.settle(key);
    }

    /// Writes a publisher's pending output and drops it when finished.
    fn settle(&mut self, key: usize) {
        let Some(p) = self.publishers.get_mut(key) else {
            return;
        };
        match p.conn.flush(|_| {}) {
            Ok(r) => p.bytes_out += r.bytes as u64,
            Err(_) => p.conn.kill(),
        }
        if p.conn.is_done() {
            let mut p = self.publishers.remove(key);
            let _ = self.registry.deregister(p.conn.socket());
            if p.upgraded {
                self.shared.stats.ingest.publishers_active.sub(1);
                self.publish_list();
            }
            info!(
                "publisher {} from {} closed after {} ms: in {} msgs ({} rejected)/{} B, out {} B",
                p.id,
                p.conn.peer,
                p.clock.age().as_millis(),
                p.accepted + p.rejected,
                p.rejected,
                p.conn.bytes_in(),
                p.bytes_out
            );
        }
    }

    fn on_frame(&mut self, key: usize, text: &str) {
        let max_name = self.cfg.limits.max_name_bytes;
        let parsed = match parse_publish(text, max_name) {
            Ok(items) => items,
            Err(e) => return self.reject(key, e.code, &e.message, e.index),
        };
        let now = now_ms();
        let batch = parsed.len() > 1;
        let valid = parsed
            .iter()
            .enumerate()
            .filter_map(|(i, item)| item.as_ref().ok().map(|m| (i, m)));
        let (accepted, refused) = self.sink.publish(valid, now);
        let mut errors: Vec<_> = parsed
            .iter()
            .filter_map(|item| item.as_ref().err())
            .map(|e| (e.code, e.message.clone(), e.index))
            .collect();
        errors.extend(
            refused
                .into_iter()
                .map(|(i, code, message)| (code, message, batch.then_some(i))),
        );
        self.publishers[key].accepted += accepted;
        self.shared
            .stats
            .ingest
            .accepted_from_publishers
            .add(accepted);
        for (code, message, index) in errors {
            self.reject(key, code, &message, index);
        }
    }

    fn reject(&mut self, key: usize, code: ErrorCode, message: &str, index: Option<usize>) {
        self.shared.stats.ingest.messages_rejected.inc();
        let p = &mut self.publishers[key];
        p.rejected += 1;
        p.conn.send(outbound::error(None, code, message, index));
    }
}
