//! The admin listener (`/health`, `/stats`) on its own thread, and the health body that the
//! public listener's `/health` shares.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use slab::Slab;

use crate::net::conn::{Conn, ReadEvent};
use crate::net::http::{self, RequestHead};
use crate::net::listener;
use crate::net::sweep::{SweepClock, SWEEP_INTERVAL};
use crate::shared::Shared;

const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the admin thread's waker (shutdown).
pub const WAKER: Token = Token(usize::MAX - 2);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    status: &'static str,
    reasons: Vec<String>,
    connections: u64,
    uptime: u64,
    last_error: Option<()>,
    publishers: u64,
    streams: u64,
    workers: usize,
}

/// The `/health` body: status, connections, uptime (s).
pub fn health_json(shared: &Shared) -> Vec<u8> {
    let s = shared.stats.snapshot();
    let reasons = degraded_reasons(shared);
    let h = Health {
        status: if reasons.is_empty() {
            "healthy"
        } else {
            "degraded"
        },
        reasons,
        connections: s.active_connections,
        uptime: s.uptime,
        last_error: None,
        publishers: s.publishers,
        streams: s.streams,
        workers: s.workers.len(),
    };
    serde_json::to_vec(&h).unwrap_or_default()
}

/// Why the gateway is degraded now (empty when healthy): memory over its limit, or a worker's
/// channel overflowing within the last [`RECENT_DROP_MS`].
pub fn degraded_reasons(shared: &Shared) -> Vec<String> {
    let mut reasons = Vec::new();
    let stats = &shared.stats;
    if stats.workers.iter().any(|w| w.memory_over_limit.get() == 1) {
        reasons.push(format!(
            "memory over backpressure.memory_limit_bytes ({})",
            shared.config().backpressure.memory_limit_bytes
        ));
    }
    let last_drop = stats.ingest.last_channel_drop_ms.get();
    if last_drop > 0 && crate::shared::now_ms().saturating_sub(last_drop) < RECENT_DROP_MS {
        reasons.push("a worker's channel was full: messages dropped for its subscribers".into());
    }
    reasons
}

/// How long a channel overflow keeps the gateway degraded.
pub const RECENT_DROP_MS: u64 = 10_000;

/// The `/stats` body: the summed snapshot with its per-worker breakdown.
pub fn stats_json(shared: &Shared) -> Vec<u8> {
    serde_json::to_vec_pretty(&shared.stats.snapshot()).unwrap_or_default()
}

fn route(shared: &Shared, head: &RequestHead) -> bytes::Bytes {
    let json = |body: Vec<u8>| http::response(200, "application/json", &body, &[]);
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/health") => json(health_json(shared)),
        ("GET", "/stats") => json(stats_json(shared)),
        (_, "/health" | "/stats") => http::error_response(405, "method not allowed"),
        _ => http::error_response(404, "not found"),
    }
}

/// Serves admin requests until shutdown. `poll` has its waker registered as [`WAKER`].
pub fn run(poll: Poll, mut listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<(Conn, SweepClock)> = Slab::new();
    let mut events = Events::with_capacity(64);
    let mut scratch = vec![0u8; 1024];
    let mut poll = poll;
    while !shared.is_stopped() {
        if let Err(e) = poll.poll(&mut events, Some(SWEEP_INTERVAL)) {
            if crate::net::interrupted(&e) {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            match ev.token() {
                WAKER => {}
                LISTENER => {
                    listener::accept_into(
                        &listener,
                        poll.registry(),
                        &mut conns,
                        "admin",
                        |_, sock, peer| (Conn::new(sock, peer), SweepClock::new()),
                    );
                }
                Token(k) => {
                    let Some((conn, _)) = conns.get_mut(k) else {
                        continue;
                    };
                    let max = shared.config().limits.max_request_head_bytes;
                    loop {
                        match conn.read_event(max, &mut scratch) {
                            ReadEvent::Head(head) => conn.respond(route(&shared, &head)),
                            ReadEvent::WouldBlock | ReadEvent::Closed => break,
                            _ => {}
                        }
                    }
                    if conn.flush(|_| {}).is_err() {
                        conn.kill();
                    }
                    if conn.is_done() {
                        let (mut c, _) = conns.remove(k);
                        let _ = poll.registry().deregister(c.socket());
                    }
                }
            }
        }
        let now = Instant::now();
        let hb = &shared.config().heartbeat;
        let (handshake, close) = (
            Duration::from_millis(hb.handshake_timeout_ms),
            Duration::from_millis(hb.close_timeout_ms),
        );
        conns.retain(|_, (conn, clock)| {
            let keep = clock.check(conn, now, handshake, close).is_none();
            if !keep {
                let _ = poll.registry().deregister(conn.socket());
            }
            keep
        });
    }
    Ok(())
}
