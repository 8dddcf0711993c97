//! The load generator's event loop: opens the subscribers (mio, one thread), subscribes them,
//! publishes at the scenario's rate on one publisher connection, and measures what arrives:
//! latency from the send time embedded in each message, loss against what the filters should
//! deliver, order and duplicates per connection and stream, handshake rate and latency, and the
//! server's CPU and memory from /proc.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::scenario::Scenario;
use super::wire;
use crate::net::inq;
use crate::procfs::{cpu_times, rss_bytes, CpuTimes};

/// Default for [`Scenario::concurrency`]-less runs: connections in their handshake at once.
pub const DEFAULT_CONCURRENCY: usize = 100;
/// How long to wait for late messages after publishing stops.
const DRAIN: Duration = Duration::from_secs(3);
/// The publisher frames for `messages` (JSON texts): a lone message as itself, more as arrays of
/// at most [`MAX_BATCH_MESSAGES`].
fn publish_frames(messages: &[String]) -> impl Iterator<Item = Vec<u8>> + '_ {
    messages.chunks(MAX_BATCH_MESSAGES).map(|chunk| {
        let text = match chunk {
            [one] => one.clone(),
            _ => format!("[{}]", chunk.join(",")),
        };
        wire::client_text_frame(text.as_bytes())
    })
}

/// Most messages in one publisher frame. When the tool falls behind its rate (the publisher's
/// socket full, the server saturated), everything due goes out at once: in frames of at most
/// this many messages (about 64 KiB at the default payload), well under the gateway's
/// `limits.max_publish_bytes` (1 MiB), which a larger batch would exceed and get the publisher
/// closed with 1009.
const MAX_BATCH_MESSAGES: usize = 256;

/// Where the server under test listens.
#[derive(Debug, Clone)]
pub struct Target {
    /// Public listener (`/ws`).
    pub public: SocketAddr,
    /// Ingest listener (`/publish`).
    pub ingest: SocketAddr,
    /// The server's pid, for CPU and memory.
    pub server_pid: Option<u32>,
}

/// Latency percentiles in ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Subscribers that connected (and subscribed).
    pub connected: usize,
    /// Handshakes per second while connecting.
    pub handshakes_per_sec: f64,
    /// Handshake latency (connect to 101), ms.
    pub handshake_ms: Percentiles,
    /// Messages published.
    pub published: u64,
    /// Publishing rate achieved, messages per second.
    pub publish_rate: f64,
    /// Deliveries the filters call for.
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Expected minus delivered.
    pub lost: u64,
    /// Messages seen twice by one connection.
    pub duplicates: u64,
    /// Messages of one stream that arrived with a seq jump (gaps).
    pub gaps: u64,
    /// Subscribers whose connection ended while messages were published (for instance closed
    /// by the gateway with 4001 because this tool read too slowly): their remaining
    /// deliveries count as lost.
    pub closed_during_run: usize,
    /// Deliveries per second during the run.
    pub deliveries_per_sec: f64,
    /// Delivery latency (publisher send to subscriber receive), ms.
    pub latency_ms: Percentiles,
    /// Server user CPU seconds during publishing and drain.
    pub server_cpu_user_s: f64,
    /// Server system CPU seconds.
    pub server_cpu_system_s: f64,
    /// Server user CPU per delivery, µs.
    pub user_us_per_delivery: f64,
    /// Server total CPU per delivery, µs.
    pub total_us_per_delivery: f64,
    /// Server resident memory at the end, bytes.
    pub server_rss_bytes: u64,
    /// Server resident memory added per connection (connect scenario), bytes.
    pub rss_per_connection_bytes: f64,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Handshaking,
    Subscribing,
    Ready,
    Dead,
}

struct Sub {
    sock: TcpStream,
    phase: Phase,
    buf: Vec<u8>,
    out: Vec<u8>,
    started: Instant,
    streams: Vec<usize>,
    last_seq: Vec<u64>,
    /// Whether it left the connecting set (ready or dead).
    settled: bool,
}

impl Sub {
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Counters the loop fills.
struct Tally {
    delivered: u64,
    duplicates: u64,
    gaps: u64,
    latency: Histogram<u64>,
    handshake: Histogram<u64>,
    ready: usize,
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("constant bounds are valid")
}

fn subscribe_message(scenario: &Scenario, streams: &[usize]) -> Vec<u8> {
    let mut req =
        serde_json::json!({"type":"subscribe","id":1,"exchange":["bench"],"dataTypes":["trade"]});
    if scenario.streams_per_subscriber < scenario.streams {
        req["symbols"] = streams.iter().map(|s| format!("S{s}")).collect();
    }
    wire::client_text_frame(req.to_string().as_bytes())
}

/// Handles the bytes a subscriber has buffered: the handshake's response, then frames.
fn process(sub: &mut Sub, tally: &mut Tally) {
    if sub.phase == Phase::Handshaking {
        let Some(end) = sub.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return;
        };
        if !sub.buf.starts_with(b"HTTP/1.1 101") {
            sub.phase = Phase::Dead;
            return;
        }
        let _ = tally
            .handshake
            .record((sub.started.elapsed().as_micros() as u64).max(1));
        sub.buf.drain(..end + 4);
        sub.phase = Phase::Subscribing;
    }
    let buf = std::mem::take(&mut sub.buf);
    let used = frames(sub, &buf, tally);
    sub.buf = buf;
    sub.buf.drain(..used);
}

/// Handles the complete server frames at the start of `bytes`; returns how many bytes they
/// took (the rest is the start of a frame still arriving).
fn frames(sub: &mut Sub, bytes: &[u8], tally: &mut Tally) -> usize {
    let mut at = 0;
    while let Some((op, a, b)) = wire::server_frame(&bytes[at..]) {
        let payload = &bytes[at + a..at + b];
        match op {
            0x1 if payload.starts_with(b"{\"type\":\"data\"") => {
                if let Some((stream, seq, sent)) = wire::data_fields(payload) {
                    tally.delivered += 1;
                    let _ = tally
                        .latency
                        .record((unix_ns().saturating_sub(sent) / 1000).max(1));
                    if let Some(last) = sub.last_seq.get_mut(stream) {
                        if *last != 0 && seq <= *last {
                            tally.duplicates += 1;
                        } else if *last != 0 && seq > *last + 1 {
                            tally.gaps += 1;
                        }
                        *last = (*last).max(seq);
                    }
                }
            }
            0x1 if sub.phase == Phase::Subscribing
                && payload.starts_with(b"{\"type\":\"subscribed\"") =>
            {
                sub.phase = Phase::Ready;
                tally.ready += 1;
            }
            0x9 => {
                let pong = wire::client_frame(0x8A, payload);
                sub.out.extend_from_slice(&pong);
            }
            0x8 => sub.phase = Phase::Dead,
            _ => {}
        }
        at += b;
    }
    at
}

/// Runs a scenario against a target and returns what it measured.
pub fn run(scenario: &Scenario, target: &Target, progress: bool) -> io::Result<Report> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut subs: Vec<Sub> = Vec::with_capacity(scenario.subscribers);
    let mut tally = Tally {
        delivered: 0,
        duplicates: 0,
        gaps: 0,
        latency: histogram(),
        handshake: histogram(),
        ready: 0,
    };
    let host = target.public.to_string();
    let rss_before = target.server_pid.and_then(rss_bytes).unwrap_or(0);
    // Connect everyone, at most MAX_CONNECTING at a time.
    let connect_start = Instant::now();
    let mut next = 0;
    let mut in_flight = 0;
    let mut scratch = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done_connecting = 0;
    while done_connecting < scenario.subscribers && Instant::now() < deadline {
        while in_flight < scenario.concurrency && next < scenario.subscribers {
            let mut sock = connect_from(next, target.public)?;
            poll.registry().register(
                &mut sock,
                Token(next),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let streams = scenario.streams_of(next);
            subs.push(Sub {
                sock,
                phase: Phase::Connecting,
                buf: Vec::new(),
                out: wire::upgrade_request(&host, "/ws"),
                started: Instant::now(),
                streams,
                last_seq: vec![0; scenario.streams],
                settled: false,
            });
            next += 1;
            in_flight += 1;
        }
        crate::net::poll_events(&mut poll, &mut events, Some(Duration::from_millis(10)))?;
        for ev in events.iter() {
            let sub = &mut subs[ev.token().0];
            step(sub, &mut scratch, &mut tally, scenario);
            if !sub.settled && matches!(sub.phase, Phase::Ready | Phase::Dead) {
                sub.settled = true;
                in_flight -= 1;
                done_connecting += 1;
            }
        }
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let mut report = Report {
        scenario: scenario.name.clone(),
        subscribers: scenario.subscribers,
        connected: tally.ready,
        handshakes_per_sec: tally.handshake.len() as f64 / connect_secs.max(1e-9),
        handshake_ms: percentiles(&tally.handshake),
        ..Report::default()
    };
    if scenario.connect_only {
        std::thread::sleep(Duration::from_secs(2));
        let rss = target.server_pid.and_then(rss_bytes).unwrap_or(0);
        report.server_rss_bytes = rss;
        report.rss_per_connection_bytes =
            rss.saturating_sub(rss_before) as f64 / tally.ready.max(1) as f64;
        return Ok(report);
    }
    // Publish.
    let mut publisher = connect_publisher(target.ingest)?;
    let mut per_stream_subs = vec![0u64; scenario.streams];
    for s in subs.iter().filter(|s| s.phase == Phase::Ready) {
        for &st in &s.streams {
            per_stream_subs[st] += 1;
        }
    }
    let dead = |subs: &[Sub]| subs.iter().filter(|s| s.phase == Phase::Dead).count();
    let dead_before = dead(&subs);
    let cpu_before = target.server_pid.and_then(cpu_times).unwrap_or_default();
    let pad = "x".repeat(scenario.payload_bytes);
    let start = Instant::now();
    let mut published = 0u64;
    let mut expected = 0u64;
    let mut last_progress = Instant::now();
    let delivered_before = tally.delivered;
    while start.elapsed() < scenario.duration + DRAIN {
        let elapsed = start.elapsed();
        if elapsed < scenario.duration {
            let due = (elapsed.as_secs_f64() * scenario.rate as f64) as u64;
            if due > published {
                let mut batch = Vec::with_capacity((due - published) as usize);
                let t = unix_ns();
                while published < due {
                    let stream = (published % scenario.streams as u64) as usize;
                    expected += per_stream_subs[stream];
                    batch.push(format!(
                        r#"{{"exchange":"bench","symbol":"S{stream}","dataType":"trade","data":{{"t":{t},"p":"{pad}"}}}}"#
                    ));
                    published += 1;
                }
                for frame in publish_frames(&batch) {
                    publisher.write_all(&frame)?;
                }
            }
        } else if tally.delivered - delivered_before >= expected {
            break;
        }
        crate::net::poll_events(&mut poll, &mut events, Some(Duration::from_millis(1)))?;
        for ev in events.iter() {
            step(&mut subs[ev.token().0], &mut scratch, &mut tally, scenario);
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "  t={:>4.1}s published {published} delivered {} of {expected} p99 {:.2} ms",
                start.elapsed().as_secs_f64(),
                tally.delivered - delivered_before,
                tally.latency.value_at_quantile(0.99) as f64 / 1000.0
            );
        }
    }
    let cpu_after = target.server_pid.and_then(cpu_times).unwrap_or_default();
    let secs = start
        .elapsed()
        .as_secs_f64()
        .min(scenario.duration.as_secs_f64() + DRAIN.as_secs_f64());
    let delivered = tally.delivered - delivered_before;
    let cpu = CpuTimes {
        user: cpu_after.user - cpu_before.user,
        system: cpu_after.system - cpu_before.system,
    };
    report.published = published;
    report.publish_rate = published as f64 / scenario.duration.as_secs_f64();
    report.expected = expected;
    report.delivered = delivered;
    report.lost = expected.saturating_sub(delivered);
    report.duplicates = tally.duplicates;
    report.gaps = tally.gaps;
    report.closed_during_run = dead(&subs) - dead_before;
    report.deliveries_per_sec = delivered as f64 / scenario.duration.as_secs_f64().min(secs);
    report.latency_ms = percentiles(&tally.latency);
    report.server_cpu_user_s = cpu.user;
    report.server_cpu_system_s = cpu.system;
    report.user_us_per_delivery = cpu.user * 1e6 / delivered.max(1) as f64;
    report.total_us_per_delivery = (cpu.user + cpu.system) * 1e6 / delivered.max(1) as f64;
    report.server_rss_bytes = target.server_pid.and_then(rss_bytes).unwrap_or(0);
    Ok(report)
}

/// Source addresses spread over on loopback, so that many runs in a row do not run out of
/// ephemeral ports (each closed connection holds its port in TIME_WAIT for a minute).
const LOOPBACK_SOURCES: u8 = 32;

/// Starts a non-blocking connect for connection `i`; on loopback, from 127.0.0.(2 + i % 32).
fn connect_from(i: usize, to: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(v4) = to else {
        return TcpStream::connect(to);
    };
    if !v4.ip().is_loopback() {
        return TcpStream::connect(to);
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % LOOPBACK_SOURCES as usize) as u8);
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.set_nonblocking(true)?;
    // Best effort: without it, reads go on to `EAGAIN` (see `step`).
    let _ = inq::enable(&socket);
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Opens the publisher connection (blocking: the load tool writes whole batches).
fn connect_publisher(addr: SocketAddr) -> io::Result<StdStream> {
    let mut s = StdStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(&wire::upgrade_request(&addr.to_string(), "/publish"))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b)?;
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(io::Error::other(format!(
            "publisher upgrade refused: {}",
            String::from_utf8_lossy(&head)
        )));
    }
    Ok(s)
}

/// Moves one subscriber forward after a readiness event.
fn step(sub: &mut Sub, scratch: &mut [u8], tally: &mut Tally, scenario: &Scenario) {
    if sub.phase == Phase::Dead {
        return;
    }
    if sub.phase == Phase::Connecting {
        sub.phase = Phase::Handshaking;
    }
    let was_handshaking = sub.phase == Phase::Handshaking;
    // Until the kernel says nothing is left (`TCP_INQ`, net::inq), else until `WouldBlock`:
    // one `recv` per delivery instead of two.
    loop {
        let left = match inq::recv(&sub.sock, scratch) {
            Ok((0, _)) => {
                sub.phase = Phase::Dead;
                break;
            }
            Ok((n, left)) if sub.buf.is_empty() && sub.phase != Phase::Handshaking => {
                // The common case: whole frames read straight from the read buffer, only the
                // start of one still arriving kept (no copy in and out of `buf`).
                let used = frames(sub, &scratch[..n], tally);
                sub.buf.extend_from_slice(&scratch[used..n]);
                left
            }
            Ok((n, left)) => {
                sub.buf.extend_from_slice(&scratch[..n]);
                left
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                sub.phase = Phase::Dead;
                break;
            }
        };
        if left == Some(0) {
            break;
        }
    }
    process(sub, tally);
    if was_handshaking && sub.phase == Phase::Subscribing {
        if scenario.connect_only {
            sub.phase = Phase::Ready;
            tally.ready += 1;
        } else {
            let msg = subscribe_message(scenario, &sub.streams);
            sub.out.extend_from_slice(&msg);
        }
    }
    if sub.flush().is_err() {
        sub.phase = Phase::Dead;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload of a client frame from `client_text_frame` (its mask is zero).
    fn payload(frame: &[u8]) -> serde_json::Value {
        let start = match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        } + 4;
        serde_json::from_slice(&frame[start..]).expect("JSON payload")
    }

    #[test]
    fn a_backlog_goes_out_in_frames_the_gateway_accepts() {
        let messages: Vec<String> = (0..600).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        let frames: Vec<Vec<u8>> = publish_frames(&messages).collect();
        let sizes: Vec<usize> = frames
            .iter()
            .map(|f| payload(f).as_array().map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes, vec![256, 256, 88]);
        let order: Vec<u64> = frames
            .iter()
            .flat_map(|f| payload(f).as_array().cloned().unwrap_or_default())
            .filter_map(|m| m["n"].as_u64())
            .collect();
        assert_eq!(order, (0..600).collect::<Vec<u64>>());
        // One message is sent as itself, not as an array.
        let one: Vec<Vec<u8>> = publish_frames(&messages[..1]).collect();
        assert_eq!(payload(&one[0]), serde_json::json!({"n": 0}));
    }
}
