//! The admin listener on its own thread: `GET /health`, `GET /stats`, `GET /metrics`,
//! `POST /flush`, the status page at `/` and the JavaScript client at `/client.js`; plus the health, metrics and stats-dump renderings that the public
//! listener's `/health` and SIGUSR1 share.

pub mod dump;
pub mod health;
pub mod metrics;
pub mod pages;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::bus::{FlushReport, WorkerLink, WorkerMsg};
use crate::net::conn::{Conn, ReadEvent};
use crate::net::http::{self, RequestHead};
use crate::net::listener;
use crate::net::sweep::{SweepClock, SWEEP_INTERVAL};
use crate::shared::Shared;

const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the admin thread's waker (shutdown).
pub const WAKER: Token = Token(usize::MAX - 2);
/// How long `POST /flush` waits for the workers' reports.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The `/health` response: 200 for healthy or degraded, 503 for unhealthy.
pub fn health_response(shared: &Shared) -> Bytes {
    let snap = shared.stats.snapshot();
    let h = health::check(shared, &snap);
    let status = if h.status == health::Status::Unhealthy {
        503
    } else {
        200
    };
    let body = serde_json::to_vec(&h).unwrap_or_default();
    http::response(status, "application/json", &body, &[])
}

fn json(body: Vec<u8>) -> Bytes {
    http::response(200, "application/json", &body, &[])
}

/// Asks every worker to write its pending output now and sums their reports.
fn flush_all(links: &[WorkerLink]) -> Bytes {
    let (tx, rx) = crossbeam_channel::bounded(links.len().max(1));
    let asked = links
        .iter()
        .filter(|l| l.try_send(WorkerMsg::Flush(tx.clone())))
        .count();
    for l in links {
        l.wake_now();
    }
    let deadline = Instant::now() + FLUSH_WAIT;
    let mut total = FlushReport::default();
    let mut answered = 0;
    while answered < asked {
        match rx.recv_deadline(deadline) {
            Ok(r) => {
                total.connections += r.connections;
                total.frames += r.frames;
                total.bytes += r.bytes;
                answered += 1;
            }
            Err(_) => break,
        }
    }
    let body = serde_json::json!({
        "flushed": total,
        "workers": links.len(),
        "workersAnswered": answered,
    });
    let status = if answered == links.len() { 200 } else { 503 };
    http::response(status, "application/json", body.to_string().as_bytes(), &[])
}

fn route(
    shared: &Shared,
    links: &[WorkerLink],
    public: Option<std::net::SocketAddr>,
    head: &RequestHead,
) -> Bytes {
    if head.method == "GET" {
        if let Some(page) = pages::asset(&head.path) {
            return page;
        }
    }
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/info") => pages::info(shared, public),
        ("GET", "/health") => health_response(shared),
        ("GET", "/stats") => {
            json(serde_json::to_vec_pretty(&shared.stats.snapshot()).unwrap_or_default())
        }
        ("GET", "/metrics") => {
            let snap = shared.stats.snapshot();
            let status = health::check(shared, &snap).status;
            let body = metrics::render(&snap, status);
            http::response(200, metrics::CONTENT_TYPE, body.as_bytes(), &[])
        }
        ("POST", "/flush") => flush_all(links),
        (_, "/health" | "/stats" | "/metrics") => http::response(
            405,
            "text/plain; charset=utf-8",
            b"method not allowed\n",
            &[("Allow", "GET")],
        ),
        (_, "/flush") => http::response(
            405,
            "text/plain; charset=utf-8",
            b"method not allowed\n",
            &[("Allow", "POST")],
        ),
        _ => http::error_response(404, "not found"),
    }
}

/// Serves admin requests until shutdown. `poll` has its waker registered as [`WAKER`].
pub fn run(
    poll: Poll,
    mut listener: TcpListener,
    shared: Arc<Shared>,
    links: Vec<WorkerLink>,
    public: Option<std::net::SocketAddr>,
) -> io::Result<()> {
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<(Conn, SweepClock)> = Slab::new();
    let mut events = Events::with_capacity(64);
    let mut scratch = vec![0u8; 1024];
    let mut poll = poll;
    let accept = |conns: &mut Slab<(Conn, SweepClock)>, poll: &Poll| {
        let (_, err) = listener::accept_into(
            &listener,
            poll.registry(),
            0,
            conns,
            "admin",
            Interest::READABLE | Interest::WRITABLE,
            |_, sock, peer| (Conn::new(sock, peer), SweepClock::new()),
        );
        if let Some(e) = err {
            shared.record_error(format!("admin: accept failed: {e}"));
        }
    };
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
                LISTENER => accept(&mut conns, &poll),
                Token(k) => {
                    let Some((conn, _)) = conns.get_mut(k) else {
                        continue;
                    };
                    let max = shared.config().limits.max_request_head_bytes;
                    loop {
                        match conn.read_event(max, &mut scratch) {
                            ReadEvent::Head(head) => {
                                conn.respond(route(&shared, &links, public, &head))
                            }
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
        // Sweep: accept what an accept error left behind, drop sockets past their deadlines.
        accept(&mut conns, &poll);
        let now = Instant::now();
        let hb = shared.config().heartbeat.clone();
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
