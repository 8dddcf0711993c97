//! Fan-out across workers and many subscribers: every matching message reaches every
//! subscriber exactly once, in seq order.

mod common;

use std::io::Write;

use common::{msg, start, wait_until, Client};
use serde_json::json;
use tickfan::loadgen::wire;

/// Reads until the END marker; returns the (symbol, seq) pairs received before it.
fn read_until_end(c: &mut Client) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    loop {
        let v = c.recv();
        assert_eq!(v["type"], "data", "{v}");
        let sym = v["symbol"].as_str().unwrap().to_string();
        if sym == "END" {
            return got;
        }
        got.push((sym, v["seq"].as_u64().unwrap()));
    }
}

#[test]
fn two_workers_both_deliver() {
    let server = start(&["server.workers=2"]);
    let mut clients = Vec::new();
    // The kernel hashes connections to the workers' listeners: connect until both have some.
    while clients.len() < 8
        || server
            .stats()
            .workers
            .iter()
            .any(|w| w.active_connections == 0)
    {
        assert!(
            clients.len() < 200,
            "the kernel never picked the second worker"
        );
        let mut c = Client::subscriber(&server);
        c.subscribe(1, &["x"], &[], &[]);
        clients.push(c);
    }
    let mut p = Client::publisher(&server);
    for i in 0..50 {
        p.send(&msg("x", "A", "trade", json!(i)));
    }
    p.send(&msg("x", "END", "trade", json!(0)));
    for c in clients.iter_mut() {
        let got = read_until_end(c);
        let seqs: Vec<u64> = got.iter().map(|(_, s)| *s).collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    }
    let stats = server.stats();
    assert!(
        stats.workers.iter().all(|w| w.messages_forwarded > 0),
        "{stats:?}"
    );
}

#[test]
fn five_hundred_subscribers_each_get_every_matching_message_once() {
    five_hundred_subscribers(&["server.workers=2"]);
}

/// The same with one `send`/`writev` call per connection instead of the io_uring submission
/// (where the kernel gives a ring, the test above runs on it).
#[test]
fn five_hundred_subscribers_with_plain_writes() {
    five_hundred_subscribers(&["server.workers=2", "server.io_uring=false"]);
}

fn five_hundred_subscribers(overrides: &[&str]) {
    const N: usize = 500;
    let server = start(overrides);
    let mut clients: Vec<Client> = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = Client::subscriber(&server);
        if i % 2 == 0 {
            c.subscribe(1, &["x"], &["A"], &["trade"]);
        } else {
            c.subscribe(1, &["x"], &[], &[]);
        }
        c.subscribe(2, &["x"], &["END"], &[]);
        clients.push(c);
    }
    wait_until("all connected", || {
        server.stats().active_connections == N as u64
    });
    let mut p = Client::publisher(&server);
    for round in 0..50 {
        let batch = json!([
            msg("x", "A", "trade", json!(round)),
            msg("x", "B", "trade", json!(round))
        ]);
        p.send(&batch);
    }
    p.send(&msg("x", "END", "trade", json!(0)));
    for (i, c) in clients.iter_mut().enumerate() {
        let got = read_until_end(c);
        let a: Vec<u64> = got
            .iter()
            .filter(|(s, _)| s == "A")
            .map(|(_, q)| *q)
            .collect();
        let b: Vec<u64> = got
            .iter()
            .filter(|(s, _)| s == "B")
            .map(|(_, q)| *q)
            .collect();
        assert_eq!(a, (1..=50).collect::<Vec<_>>(), "client {i}");
        let expect_b: Vec<u64> = if i % 2 == 0 {
            vec![]
        } else {
            (1..=50).collect()
        };
        assert_eq!(b, expect_b, "client {i}");
    }
    let s = server.stats();
    // 250 clients get 50 messages, 250 get 100, all 500 get END.
    assert_eq!(s.messages_forwarded, 250 * 50 + 250 * 100 + 500);
    assert_eq!(s.dropped_channel_full, 0);
}

/// A client text frame masked with a non-zero key: the load tool's frame (zero key), with the
/// key written in and the payload masked by it.
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = wire::client_text_frame(payload);
    let start = f.len() - payload.len();
    f[start - 4..start].copy_from_slice(&KEY);
    for (i, b) in f[start..].iter_mut().enumerate() {
        *b ^= KEY[i % 4];
    }
    f
}

/// Every way a publisher's bytes can arrive: the first frame in the same segment as the
/// upgrade request, a frame split over several segments with pauses between them, many frames
/// in one segment, thousands of frames each in its own segment (they keep arriving while the
/// server reads), and a last frame followed at once by the end of the stream. None of these
/// may leave a frame unread.
#[test]
fn publisher_frames_are_read_however_they_arrive() {
    const LAST: u64 = 3000;
    for placement in ["worker", "thread"] {
        let server = start(&[&format!("server.ingest_placement=\"{placement}\"")]);
        let mut sub = Client::subscriber(&server);
        sub.subscribe(1, &["x"], &[], &[]);
        let frame = |sym: &str, i: u64| {
            masked_text_frame(msg("x", sym, "trade", json!(i)).to_string().as_bytes())
        };
        let mut p = std::net::TcpStream::connect(server.ingest_addr().unwrap()).unwrap();
        p.set_nodelay(true).unwrap();
        let mut first = wire::upgrade_request("x", "/publish");
        first.extend(frame("A", 1));
        p.write_all(&first).unwrap();
        for (n, piece) in frame("A", 2).chunks(7).enumerate() {
            p.write_all(piece).unwrap();
            if n % 2 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let burst: Vec<u8> = (3..=200).flat_map(|i| frame("A", i)).collect();
        p.write_all(&burst).unwrap();
        for i in 201..LAST {
            p.write_all(&frame("A", i)).unwrap();
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
        let mut end = frame("A", LAST);
        end.extend(frame("END", 0));
        p.write_all(&end).unwrap();
        p.shutdown(std::net::Shutdown::Write).unwrap();
        let seqs: Vec<u64> = read_until_end(&mut sub).iter().map(|(_, s)| *s).collect();
        let want: Vec<u64> = (1..=LAST).collect();
        assert!(
            seqs == want,
            "ingest on the {placement}: {} of {LAST} arrived",
            seqs.len()
        );
    }
}
