//! Slow consumers: a subscriber that stops reading, on the same worker as fast ones. Its
//! policy applies (disconnect 4001, conflate, drop with notices), the fast ones get every
//! message in order, memory stays bounded, and every message is accounted for.

mod common;

use std::time::Duration;

use common::{msg, slow_subscriber, start, wait_until, Client};
use serde_json::{json, Value};
use tickfan::ServerHandle;

const LIMITS: [&str; 4] = [
    "server.send_buffer_bytes=16384",
    "backpressure.soft_limit_bytes=16384",
    "backpressure.hard_limit_bytes=262144",
    "backpressure.soft_grace_ms=5000",
];
/// A client that does not read passes the hard limit at once; one that reads has a margin of
/// about 1,000 messages (100 ms at the publishing pace) before it would.
const HARD_LIMIT: u64 = 262144;

fn with_limits(extra: &[&'static str]) -> ServerHandle {
    let mut all: Vec<&str> = LIMITS.to_vec();
    all.extend_from_slice(extra);
    start(&all)
}

/// A ~250-byte message body.
fn payload(i: u64) -> Value {
    json!({"i": i, "pad": "x".repeat(160)})
}

/// Publishes `n` frames `make(i)`, pausing 10 ms after every `per_pause`: with 100 messages
/// per pause, about 10,000 messages per second, which a client that reads keeps up with and one
/// that does not read cannot.
fn publish_paced(p: &mut Client, n: u64, per_pause: u64, mut make: impl FnMut(u64) -> Value) {
    for i in 0..n {
        p.send(&make(i));
        if i % per_pause == per_pause - 1 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads on its own thread (as a real fast client does) `n` data messages in seq order.
fn fast_reader(mut c: Client, n: u64) -> std::thread::JoinHandle<Client> {
    std::thread::spawn(move || {
        expect_all_in_order(&mut c, n);
        c
    })
}

/// Reads a slow client's backlog until `n` messages of stream x/A/depth are accounted for
/// (data in seq order, and `dropped` notices with reason `slow_consumer` counting the rest),
/// then checks that the notices counted exactly what the server dropped and that its counters
/// balance.
fn assert_every_message_accounted_for(c: &mut Client, server: &ServerHandle, n: u64) {
    let (mut data, mut missed, mut last) = (0u64, 0u64, 0u64);
    while data + missed < n {
        let v = c.recv();
        match v["type"].as_str() {
            Some("data") => {
                let seq = v["seq"].as_u64().unwrap();
                assert!(seq > last);
                last = seq;
                data += 1;
            }
            Some("dropped") => {
                assert_eq!(v["reason"], "slow_consumer", "{v}");
                assert_eq!(
                    (v["symbol"].as_str(), v["dataType"].as_str()),
                    (Some("A"), Some("depth"))
                );
                missed += v["count"].as_u64().unwrap();
            }
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(data + missed, n);
    assert_eq!(missed, server.stats().delivery.dropped_slow_consumer);
    assert_balanced(server);
}

/// Reads `n` data messages and checks they are seq 1..=n of one stream.
fn expect_all_in_order(c: &mut Client, n: u64) {
    for i in 1..=n {
        let v = c.recv_type("data");
        assert_eq!(v["seq"], i, "{v}");
    }
}

/// The invariant over every worker: routed = written + conflated + dropped + pending.
fn assert_balanced(server: &ServerHandle) {
    let d = server.stats().delivery;
    assert_eq!(
        d.routed,
        d.written + d.conflated + d.dropped_slow_consumer + d.dropped_on_close + d.pending,
        "{d:?}"
    );
}

#[test]
fn slow_consumer_is_disconnected_with_4001_while_fast_ones_get_everything() {
    slow_consumer_case(&[]);
}

/// The same with one `send`/`writev` call per connection instead of the io_uring submission
/// (where the kernel gives a ring, the test above runs on it).
#[test]
fn slow_consumer_is_disconnected_with_plain_writes_too() {
    slow_consumer_case(&["server.io_uring=false"]);
}

fn slow_consumer_case(overrides: &[&'static str]) {
    let server = with_limits(overrides);
    const N: u64 = 10_000;
    let mut slow = slow_subscriber(&server, 4096);
    slow.subscribe(1, &["x"], &[], &["trade"]);
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mut c = Client::subscriber(&server);
            c.subscribe(1, &["x"], &[], &["trade"]);
            fast_reader(c, N)
        })
        .collect();
    let mut p = Client::publisher(&server);
    publish_paced(&mut p, N, 100, |i| msg("x", "A", "trade", payload(i)));
    let fast: Vec<Client> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    wait_until("slow consumer closed", || {
        server.stats().delivery.disconnected_slow == 1
    });
    // The slow client finds, after what it had buffered, the close frame 4001.
    let close = slow.recv_close().expect("close frame");
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(close.reason.as_str(), "slow consumer");
    wait_until("gauges published", || {
        server.stats().workers[0].peak_pending_bytes > 0
    });
    let stats = server.stats();
    // Memory stayed bounded: no queue ever held more than the hard limit (plus the frame
    // that crossed it); the peak is tracked on every queued message.
    assert!(
        stats.workers[0].peak_pending_bytes <= HARD_LIMIT + 1024,
        "{stats:?}"
    );
    assert!(stats.delivery.dropped_on_close > 0);
    drop(fast);
    drop(slow);
    wait_until("all closed", || server.stats().active_connections == 0);
    assert_balanced(&server);
    assert_eq!(server.stats().delivery.pending, 0);
}

#[test]
fn conflate_keeps_the_newest_message_of_each_stream() {
    let server = with_limits(&[]);
    const STREAMS: u64 = 10;
    const ROUNDS: u64 = 1_000;
    let mut slow = slow_subscriber(&server, 4096);
    slow.subscribe(1, &["x"], &[], &["ticker"]);
    let mut fast = Client::subscriber(&server);
    fast.subscribe(1, &["x"], &[], &["ticker"]);
    let reader = std::thread::spawn(move || {
        for _ in 0..STREAMS * ROUNDS {
            fast.recv_type("data");
        }
    });
    let mut p = Client::publisher(&server);
    publish_paced(&mut p, ROUNDS, 10, |round| {
        json!((0..STREAMS)
            .map(|s| msg("x", &format!("S{s}"), "ticker", payload(round)))
            .collect::<Vec<_>>())
    });
    reader.join().unwrap();
    let stats = server.stats();
    assert!(stats.delivery.conflated > 0, "{:?}", stats.delivery);
    assert_eq!(stats.delivery.disconnected_slow, 0);
    // The slow client now reads: per stream, seqs only increase, and the last is the newest.
    let mut last = [0u64; STREAMS as usize];
    let mut received = 0;
    while last.iter().any(|&s| s < ROUNDS) {
        let v = slow.recv_type("data");
        let s: usize = v["symbol"].as_str().unwrap()[1..].parse().unwrap();
        let seq = v["seq"].as_u64().unwrap();
        assert!(seq > last[s], "stream {s}: {seq} after {}", last[s]);
        last[s] = seq;
        received += 1;
    }
    assert!(
        received < STREAMS * ROUNDS,
        "nothing was conflated for the slow client"
    );
    // Its own counters balance too.
    slow.send(&json!({"type":"getStats","id":1}));
    let st = slow.recv_type("stats");
    let queued = st["dataMessagesQueued"].as_u64().unwrap();
    let parts = [
        "dataMessagesWritten",
        "conflated",
        "droppedSlowConsumer",
        "droppedOnClose",
        "pendingDataMessages",
    ];
    let sum: u64 = parts.iter().map(|k| st[*k].as_u64().unwrap()).sum();
    assert_eq!(queued, sum, "{st}");
    assert_eq!(queued, STREAMS * ROUNDS);
    assert_balanced(&server);
}

#[test]
fn drop_policy_reports_what_was_missed() {
    let server = with_limits(&["backpressure.policy=\"drop\""]);
    let mut slow = slow_subscriber(&server, 4096);
    slow.subscribe(1, &["x"], &["A"], &["depth"]);
    let mut fast = Client::subscriber(&server);
    fast.subscribe(1, &["x"], &["A"], &["depth"]);
    const N: u64 = 5_000;
    let reader = fast_reader(fast, N);
    let mut p = Client::publisher(&server);
    publish_paced(&mut p, N, 100, |i| msg("x", "A", "depth", payload(i)));
    reader.join().unwrap();
    assert!(server.stats().delivery.dropped_slow_consumer > 0);
    // The slow client reads everything: data in seq order plus notices that count the rest.
    assert_every_message_accounted_for(&mut slow, &server, N);
}

#[test]
fn memory_guard_sheds_slow_consumers_and_reports_degraded() {
    // A limit of 1 byte: the process is always "over", so every consumer over the soft limit is
    // shed, and only those.
    let server = with_limits(&[
        "backpressure.memory_limit_bytes=1",
        "backpressure.soft_grace_ms=60000",
        "backpressure.hard_limit_bytes=100000000",
        // Shed only queues over 256 KiB: the slow client passes that, a reading one does not.
        "backpressure.soft_limit_bytes=262144",
    ]);
    let mut slow = slow_subscriber(&server, 4096);
    slow.subscribe(1, &["x"], &[], &[]);
    let mut fast = Client::subscriber(&server);
    fast.subscribe(1, &["x"], &[], &[]);
    let reader = fast_reader(fast, 5_000);
    let mut p = Client::publisher(&server);
    publish_paced(&mut p, 5_000, 100, |i| msg("x", "A", "trade", payload(i)));
    let mut fast = reader.join().unwrap();
    wait_until("shed", || server.stats().delivery.memory_shed == 1);
    let close = slow.recv_close().expect("close frame");
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(
        close.reason.as_str(),
        "slow consumer (server memory pressure)"
    );
    let health = common::http(
        server.public_addr().unwrap(),
        "GET /health HTTP/1.1\r\n\r\n",
    );
    assert!(health.contains("\"status\":\"degraded\""), "{health}");
    assert!(health.contains("memory"), "{health}");
    fast.sync();
}

#[test]
fn full_worker_channel_drops_for_that_worker_only_and_is_explained() {
    let server = start(&["server.workers=2", "server.worker_channel_capacity=64"]);
    // One subscriber on each worker (the kernel picks the worker).
    let mut on: [Option<Client>; 2] = [None, None];
    let mut tries = 0;
    while on.iter().any(Option::is_none) {
        tries += 1;
        assert!(tries < 200);
        let mut c = Client::subscriber(&server);
        c.subscribe(1, &["x"], &[], &[]);
        c.send(&json!({"type":"getStats","id":0}));
        let w = c.recv_type("stats")["worker"].as_u64().unwrap() as usize;
        if on[w].is_none() {
            on[w] = Some(c);
        }
    }
    let [Some(mut stalled), Some(mut healthy)] = on else {
        unreachable!()
    };
    let stall_start = std::time::Instant::now();
    assert!(server.stall_worker(0, Duration::from_millis(1500)));
    std::thread::sleep(Duration::from_millis(100));
    let mut p = Client::publisher(&server);
    for i in 0..300 {
        p.send(&msg("x", "A", "trade", json!(i)));
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Worker 1 delivers everything while worker 0 is stalled: publishers were not blocked.
    expect_all_in_order(&mut healthy, 300);
    let dropped = server.stats().dropped_channel_full;
    assert!(dropped > 0 && dropped <= 300 - 63, "{dropped}");
    let health = common::http(
        server.public_addr().unwrap(),
        "GET /health HTTP/1.1\r\n\r\n",
    );
    assert!(health.contains("\"status\":\"degraded\""), "{health}");
    // After the stall, the stalled worker's subscriber gets what fitted in the channel, then
    // (when the next message shows the gap) a notice with the count, then the new message.
    let after_stall = stall_start + Duration::from_millis(1700);
    std::thread::sleep(after_stall.saturating_duration_since(std::time::Instant::now()));
    p.send(&msg("x", "A", "trade", json!(300)));
    let mut seen = 0u64;
    let mut last = 0u64;
    loop {
        let v = stalled.recv();
        match v["type"].as_str() {
            Some("data") => {
                let seq = v["seq"].as_u64().unwrap();
                assert!(seq > last);
                last = seq;
                seen += 1;
                if seq == 301 {
                    break;
                }
            }
            Some("dropped") => {
                assert_eq!(v["reason"], "worker_overloaded", "{v}");
                assert_eq!(v["count"].as_u64().unwrap(), dropped);
            }
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(seen + dropped, 301);
    assert_eq!(server.stats().delivery.channel_gap_messages, dropped);
}

/// With a soft limit of one byte and no grace, a queue holds at most the one frame it took
/// while empty, so every write of it is a one-frame write (the flush's short path). The drops
/// made while it waited must still be reported once it is written, with nothing else queued
/// or published after it, and without waiting for some later event to flush the session.
#[test]
fn a_queue_of_one_frame_reports_the_drops_once_written() {
    let server = start(&[
        "server.send_buffer_bytes=16384",
        "backpressure.policy=\"drop\"",
        "backpressure.soft_limit_bytes=1",
        "backpressure.hard_limit_bytes=262144",
        "backpressure.soft_grace_ms=0",
        // No heartbeat ping in the test's time: nothing but the flush itself writes the notice.
        "heartbeat.ping_interval_ms=600000",
    ]);
    let mut slow = slow_subscriber(&server, 4096);
    slow.subscribe(1, &["x"], &["A"], &["depth"]);
    const N: u64 = 2_000;
    let mut p = Client::publisher(&server);
    publish_paced(&mut p, N, 100, |i| msg("x", "A", "depth", payload(i)));
    wait_until("every message routed", || {
        let d = server.stats().delivery;
        d.routed == N && d.dropped_slow_consumer > 0
    });
    assert_every_message_accounted_for(&mut slow, &server, N);
}

/// An empty queue takes any message up to the hard limit: a client that has read everything is
/// not a slow consumer, however large the message, even with no grace period at all.
#[test]
fn an_empty_queue_takes_a_message_larger_than_the_soft_limit() {
    let server = start(&[
        "backpressure.policy=\"drop\"",
        "backpressure.soft_limit_bytes=100",
        "backpressure.hard_limit_bytes=262144",
        "backpressure.soft_grace_ms=0",
    ]);
    let mut c = Client::subscriber(&server);
    c.subscribe(1, &["x"], &["A"], &["trade"]);
    const N: u64 = 10;
    let reader = fast_reader(c, N);
    let mut p = Client::publisher(&server);
    publish_paced(&mut p, N, 1, |i| {
        std::thread::sleep(Duration::from_millis(20));
        msg("x", "A", "trade", payload(i))
    });
    reader.join().unwrap();
    assert_eq!(server.stats().delivery.dropped_slow_consumer, 0);
    assert_balanced(&server);
}
