//! Connection lifecycle with short timers: heartbeats, handshake deadline, maximum lifetime,
//! close deadline and batch flushing. Timers are checked for the behaviour (what closes, with
//! which code, counted under which reason), with generous bounds on when.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{msg, raw_ws, start, wait_until, Client};
use serde_json::json;

/// Splits unmasked server frames into (opcode, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((op, a, b)) = tickfan::loadgen::wire::server_frame(bytes) {
        out.push((op, bytes[a..b].to_vec()));
        bytes = &bytes[b..];
    }
    out
}

#[test]
fn silent_client_is_pinged_then_closed_with_1001() {
    let server = start(&[
        "heartbeat.ping_interval_ms=300",
        "heartbeat.pong_timeout_ms=300",
        "heartbeat.close_timeout_ms=500",
    ]);
    let mut s = raw_ws(server.public_addr().unwrap());
    let t0 = Instant::now();
    let mut all = Vec::new();
    // The socket itself closes (nothing of the worker, its io_uring included, holds it
    // open), not just the WebSocket.
    s.read_to_end(&mut all)
        .expect("the server closes the socket, not a read timeout");
    let elapsed = t0.elapsed();
    let f = frames(&all);
    assert_eq!(f[0].0, 0x9, "first a ping: {f:?}");
    let close = f.iter().find(|(op, _)| *op == 0x8).expect("a close frame");
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1001);
    assert_eq!(&close.1[2..], b"heartbeat timeout");
    // ping interval + pong timeout = 600 ms, then the close deadline (500 ms) drops the socket
    // that never answered the close.
    assert!(elapsed >= Duration::from_millis(550), "{elapsed:?}");
    wait_until("counted", || server.stats().closed.heartbeat_timeout == 1);
    assert_eq!(server.stats().closed.close_timeout, 1);
}

#[test]
fn client_that_answers_pings_stays_open() {
    let server = start(&[
        "heartbeat.ping_interval_ms=200",
        "heartbeat.pong_timeout_ms=200",
    ]);
    let mut c = Client::subscriber(&server);
    c.subscribe(1, &["x"], &[], &[]);
    // Reading answers pings (tungstenite replies with pongs); keep reading for 1.2 s.
    c.ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1200) {
        match c.ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("connection ended: {e}"),
        }
    }
    c.ws.get_mut()
        .set_read_timeout(Some(common::TIMEOUT))
        .unwrap();
    c.sync();
    let stats = server.stats();
    assert!(stats.pings_sent >= 2, "{stats:?}");
    assert_eq!(stats.closed.heartbeat_timeout, 0);
}

#[test]
fn json_heartbeats_count_as_traffic() {
    let server = start(&[
        "heartbeat.ping_interval_ms=300",
        "heartbeat.pong_timeout_ms=300",
    ]);
    let mut c = Client::subscriber(&server);
    // The client sends a JSON heartbeat every 100 ms and never reads, so it never answers a
    // WebSocket ping: only its messages keep it alive.
    for _ in 0..12 {
        c.send(&json!({"type":"heartbeat"}));
        std::thread::sleep(Duration::from_millis(100));
    }
    c.sync();
    assert_eq!(server.stats().closed.heartbeat_timeout, 0);
    assert_eq!(server.stats().pings_sent, 0);
}

#[test]
fn half_handshakes_and_silent_sockets_are_dropped() {
    let server = start(&["heartbeat.handshake_timeout_ms=300"]);
    let addr = server.public_addr().unwrap();
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
        .unwrap();
    let mut ok = Client::subscriber(&server);
    for s in [&mut silent, &mut half] {
        s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
        let mut buf = Vec::new();
        let n = s
            .read_to_end(&mut buf)
            .expect("closed by the server, not timed out");
        assert_eq!(n, 0, "dropped without a response");
    }
    wait_until("counted", || server.stats().closed.handshake_timeout == 2);
    // The upgraded client is not affected.
    ok.sync();
}

#[test]
fn silent_sockets_on_ingest_and_admin_listeners_are_dropped() {
    let server = start(&["heartbeat.handshake_timeout_ms=300"]);
    for addr in [server.ingest_addr().unwrap(), server.admin_addr().unwrap()] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /publish HTTP/1.1\r\n").unwrap();
        s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
        let mut buf = Vec::new();
        let n = s
            .read_to_end(&mut buf)
            .expect("closed by the server, not timed out");
        assert_eq!(n, 0);
    }
}

#[test]
fn max_lifetime_closes_with_1001() {
    let server = start(&["limits.max_lifetime_ms=300"]);
    let mut c = Client::subscriber(&server);
    let t0 = Instant::now();
    let close = c.recv_close().expect("close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "maximum connection lifetime reached");
    // 300 ms plus a jitter of at most a tenth.
    assert!(t0.elapsed() >= Duration::from_millis(250));
    wait_until("counted", || server.stats().closed.lifetime == 1);
}

/// Publishes `n` single-message frames 2 ms apart and returns the worker's socket-write count while
/// the subscriber received them.
fn writes_for(server: &tickfan::ServerHandle, n: u64) -> u64 {
    let mut sub = Client::subscriber(server);
    sub.subscribe(1, &["x"], &[], &[]);
    let mut p = Client::publisher(server);
    let before = server.stats().write_syscalls;
    for i in 0..n {
        p.send(&msg("x", "A", "trade", json!(i)));
        std::thread::sleep(Duration::from_millis(2));
    }
    for i in 0..n {
        let v = sub.recv();
        assert_eq!(v["seq"], i + 1);
    }
    server.stats().write_syscalls - before
}

#[test]
fn batch_window_coalesces_writes() {
    let batched = start(&["batch.window_ms=300", "batch.max_messages=1000"]);
    let with_window = writes_for(&batched, 100);
    let plain = start(&[]);
    let without = writes_for(&plain, 100);
    println!("writes for 100 messages: {with_window} with a 300 ms window, {without} without");
    // 100 messages over about 200 ms fit in one or two 300 ms windows; without a window each
    // message, arriving alone, is written on its own.
    assert!(with_window <= 4, "{with_window}");
    assert!(without >= 20, "{without}");
}

#[test]
fn batch_max_messages_flushes_before_the_window() {
    let server = start(&["batch.window_ms=1000", "batch.max_messages=10"]);
    let mut sub = Client::subscriber(&server);
    sub.subscribe(1, &["x"], &[], &[]);
    let mut p = Client::publisher(&server);
    let t0 = Instant::now();
    for i in 0..100 {
        p.send(&msg("x", "A", "trade", json!(i)));
    }
    // At most 9 messages (one partial batch) can be waiting for the window at any time, so
    // the first 91 arrive without waiting for it.
    for i in 0..91u64 {
        assert_eq!(sub.recv()["seq"], i + 1);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    // The rest arrive when the window ends.
    for i in 91..100u64 {
        assert_eq!(sub.recv()["seq"], i + 1);
    }
}

#[test]
fn data_and_end_of_stream_in_one_event_close_at_once() {
    // Long timers: only noticing the end of stream can end these connections quickly.
    let server = start(&[
        "heartbeat.ping_interval_ms=60000",
        "heartbeat.close_timeout_ms=30000",
    ]);
    let addr = server.public_addr().unwrap();
    // A close frame immediately followed by FIN.
    let mut a = raw_ws(addr);
    a.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]).unwrap();
    a.shutdown(std::net::Shutdown::Write).unwrap();
    // A message immediately followed by FIN (the peer vanishes without a close frame).
    let mut b = raw_ws(addr);
    let ping = br#"{"type":"ping"}"#;
    let mut frame = vec![0x81, 0x80 | ping.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(ping);
    b.write_all(&frame).unwrap();
    b.shutdown(std::net::Shutdown::Write).unwrap();
    let t0 = Instant::now();
    wait_until("both gone", || server.stats().open_sockets == 0);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(server.stats().closed.close_timeout, 0);
}

/// Stopping a server must not disturb the thread that started it. Each worker's io_uring used
/// to be made on that thread, and when a ring closes the kernel notifies the task that made it
/// (`task_work_add` with `TWA_SIGNAL`): a blocking socket call with a timeout on that thread
/// then failed with EINTR. Seen as a flaky handshake in a test that started a second server
/// right after dropping the first.
#[test]
fn stopping_a_server_does_not_interrupt_the_thread_that_started_it() {
    for round in 0..5 {
        let server = start(&[]);
        // The ring has carried sends: a subscriber got its reply through it.
        Client::subscriber(&server).subscribe(1, &["x"], &[], &[]);
        drop(server);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut quiet = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _peer = listener.accept().unwrap();
        quiet
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let err = quiet.read(&mut [0u8; 1]).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "round {round}: a read on the starting thread ended with {err}, not its timeout"
        );
    }
}
