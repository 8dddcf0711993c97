//! Snapshots, resume after reconnect, epochs, throttled filters, and bounded history, over
//! real sockets with a publisher sending while clients subscribe.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{msg, start, wait_until, Client};
use serde_json::{json, Value};

/// Publishes round-robin on `streams` (symbols) every `every`, until stopped; returns how many
/// it sent per stream.
fn background_publisher(
    server: &tickfan::ServerHandle,
    streams: &'static [&'static str],
    every: Duration,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut p = Client::publisher(server);
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let mut rounds = 0u64;
        while !s.load(Ordering::Relaxed) {
            let batch: Vec<Value> = streams
                .iter()
                .map(|sym| msg("x", sym, "ticker", json!(rounds)))
                .collect();
            p.send(&json!(batch));
            rounds += 1;
            std::thread::sleep(every);
        }
        rounds
    });
    (stop, h)
}

#[test]
fn snapshot_then_live_without_gap_or_duplicate_while_publishing() {
    let server = start(&[]);
    let (stop, publisher) =
        background_publisher(&server, &["A", "B", "C"], Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(200));
    let mut c = Client::subscriber(&server);
    c.send(&json!({"type":"subscribe","id":1,"exchange":["x"],"snapshot":true}));
    let reply = c.recv();
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert!(
        reply["epoch"].as_str().is_some_and(|e| e.len() == 16),
        "{reply}"
    );
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut snapshots = 0;
    for _ in 0..300 {
        let v = c.recv_type("data");
        let sym = v["symbol"].as_str().unwrap().to_string();
        let seq = v["seq"].as_u64().unwrap();
        match last.get(&sym) {
            None => {
                // The first message of each stream is its snapshot.
                assert_eq!(v["snapshot"], true, "{v}");
                snapshots += 1;
            }
            Some(prev) => {
                assert_eq!(seq, prev + 1, "gap or duplicate on {sym}: {v}");
                assert!(v.get("snapshot").is_none());
            }
        }
        last.insert(sym, seq);
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    assert_eq!(snapshots, 3);
}

/// Reads `n` data messages; returns the last seq per symbol.
fn read_seqs(c: &mut Client, n: usize) -> HashMap<String, u64> {
    let mut last = HashMap::new();
    for _ in 0..n {
        let v = c.recv_type("data");
        last.insert(
            v["symbol"].as_str().unwrap().to_string(),
            v["seq"].as_u64().unwrap(),
        );
    }
    last
}

#[test]
fn resume_within_history_replays_exactly_then_continues_live() {
    let server = start(&["history.size=100"]);
    let mut p = Client::publisher(&server);
    let mut first = Client::subscriber(&server);
    let reply = first.subscribe(1, &["x"], &[], &[]);
    let epoch = reply["epoch"].as_str().unwrap().to_string();
    for i in 0..10 {
        p.send(&json!([
            msg("x", "A", "trade", json!(i)),
            msg("x", "B", "trade", json!(i))
        ]));
    }
    let seen = read_seqs(&mut first, 20);
    assert_eq!((seen["A"], seen["B"]), (10, 10));
    drop(first);
    // While the client is away, 15 more messages per stream.
    for i in 10..25 {
        p.send(&json!([
            msg("x", "A", "trade", json!(i)),
            msg("x", "B", "trade", json!(i))
        ]));
    }
    let mut again = Client::subscriber(&server);
    again.sync();
    again.send(&json!({"type":"subscribe","id":2,"exchange":["x"],
        "resume":{"epoch":epoch,"streams":{"x:A:trade":10,"x:B:trade":10}}}));
    let reply = again.recv_type("subscribed");
    assert_eq!(reply["recovered"], true, "{reply}");
    let mut next: HashMap<String, u64> = [("A".to_string(), 11), ("B".to_string(), 11)].into();
    for _ in 0..30 {
        let v = again.recv_type("data");
        let sym = v["symbol"].as_str().unwrap().to_string();
        assert_eq!(v["seq"].as_u64(), Some(next[&sym]), "{v}");
        *next.get_mut(&sym).unwrap() += 1;
    }
    // Live continues right after the replay.
    p.send(&msg("x", "A", "trade", json!(99)));
    let v = again.recv_type("data");
    assert_eq!(
        (v["symbol"].as_str(), v["seq"].as_u64()),
        (Some("A"), Some(26))
    );
    assert!(server
        .stats()
        .workers
        .iter()
        .all(|w| w.history_bytes > 0 || w.active_connections == 0));
}

#[test]
fn resume_that_cannot_be_served_says_why() {
    let server = start(&["history.size=5"]);
    let mut p = Client::publisher(&server);
    let mut c = Client::subscriber(&server);
    let epoch = c.subscribe(1, &["y"], &[], &[])["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..20 {
        p.send(&msg("x", "A", "trade", json!(i)));
        p.send(&msg("x", "B", "trade", json!(i)));
    }
    p.send(&msg("y", "MARK", "trade", json!(0)));
    c.recv_type("data");
    let mut r = Client::subscriber(&server);
    r.send(
        &json!({"type":"subscribe","id":2,"exchange":["x"],"snapshot":true,
        "resume":{"epoch":epoch,"streams":{"x:A:trade":3,"x:B:trade":99,"x:C:trade":1}}}),
    );
    let reply = r.recv_type("subscribed");
    assert_eq!(reply["recovered"], false, "{reply}");
    let why = &reply["notRecovered"];
    assert!(
        why["x:A:trade"]
            .as_str()
            .unwrap()
            .contains("history no longer reaches back"),
        "{why}"
    );
    assert!(
        why["x:B:trade"]
            .as_str()
            .unwrap()
            .contains("beyond the newest"),
        "{why}"
    );
    assert_eq!(why["x:C:trade"], "unknown stream");
    // The client can fall back to the snapshot: both streams' newest values follow.
    let mut snaps = Vec::new();
    for _ in 0..2 {
        let v = r.recv_type("data");
        assert_eq!(v["snapshot"], true);
        snaps.push((
            v["symbol"].as_str().unwrap().to_string(),
            v["seq"].as_u64().unwrap(),
        ));
    }
    snaps.sort();
    assert_eq!(snaps, vec![("A".to_string(), 20), ("B".to_string(), 20)]);
    // A wrong epoch (as after a restart) is never recovered, and never an error.
    let mut w = Client::subscriber(&server);
    w.send(&json!({"type":"subscribe","id":3,"exchange":["x"],"resume":{"epoch":"0000000000000000","streams":{"x:A:trade":19}}}));
    let reply = w.recv_type("subscribed");
    assert_eq!(reply["recovered"], false);
    assert!(reply["notRecovered"]["x:A:trade"]
        .as_str()
        .unwrap()
        .starts_with("epoch changed"));
}

#[test]
fn a_restart_changes_the_epoch() {
    let a = start(&[]);
    let e1 = Client::subscriber(&a).subscribe(1, &["x"], &[], &[])["epoch"].clone();
    drop(a);
    let b = start(&[]);
    let e2 = Client::subscriber(&b).subscribe(1, &["x"], &[], &[])["epoch"].clone();
    assert_ne!(e1, e2);
}

#[test]
fn throttled_filter_sends_the_newest_at_most_once_per_interval() {
    let server = start(&[]);
    let mut slow = Client::subscriber(&server);
    slow.send(
        &json!({"type":"subscribe","id":1,"exchange":["x"],"symbols":["A"],"throttleMs":100}),
    );
    assert_eq!(slow.recv_type("subscribed")["throttleMs"], 100);
    let mut full = Client::subscriber(&server);
    full.subscribe(1, &["x"], &["A"], &[]);
    let mut p = Client::publisher(&server);
    let t0 = std::time::Instant::now();
    for i in 0..100 {
        p.send(&msg("x", "A", "ticker", json!(i)));
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed_ms = t0.elapsed().as_millis() as u64;
    // The unthrottled client gets all 100.
    for i in 1..=100u64 {
        assert_eq!(full.recv_type("data")["seq"], i);
    }
    // The throttled one gets one per 100 ms (plus the first at once), each newer, and the
    // newest value last.
    let mut seqs = Vec::new();
    while seqs.last() != Some(&100) {
        seqs.push(slow.recv_type("data")["seq"].as_u64().unwrap());
    }
    let most = elapsed_ms / 100 + 2;
    assert!(
        seqs.len() as u64 <= most && seqs.len() >= 5,
        "{} messages in {elapsed_ms} ms: {seqs:?}",
        seqs.len()
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    slow.expect_silence(Duration::from_millis(250));
    assert!(server.stats().delivery.conflated >= 100 - seqs.len() as u64 - 1);
    // Bounds.
    slow.send(&json!({"type":"subscribe","id":2,"exchange":["y"],"throttleMs":5}));
    assert_eq!(slow.recv_type("error")["code"], "INVALID_MESSAGE");
}

#[test]
fn history_memory_stays_bounded_under_many_streams() {
    let server = start(&["history.size=10"]);
    let mut sub = Client::subscriber(&server);
    sub.subscribe(1, &["z"], &["END"], &[]);
    let mut p = Client::publisher(&server);
    for round in 0..20 {
        let batch: Vec<Value> = (0..500)
            .map(|s| msg("x", &format!("S{s}"), "trade", json!(round)))
            .collect();
        p.send(&json!(batch));
    }
    p.send(&msg("z", "END", "trade", json!(0)));
    sub.recv_type("data");
    wait_until("history gauge published", || {
        server.stats().workers[0].history_bytes > 0
    });
    let frame_bytes = 120; // each frame here is about 100 bytes
    let bytes = server.stats().workers[0].history_bytes;
    assert!(bytes <= 501 * 10 * frame_bytes, "{bytes}");
    assert!(bytes >= 500 * 10 * 80, "{bytes}");
}
