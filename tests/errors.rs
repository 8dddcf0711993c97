//! Every error code and close code a subscriber or publisher can provoke, over real sockets.
//! An error reply never closes the connection; the other connections are not disturbed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{msg, raw_ws, start, Client};
use serde_json::json;

fn expect_error(c: &mut Client, code: &str) -> serde_json::Value {
    let e = c.recv_type("error");
    assert_eq!(e["code"], code, "{e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    e
}

#[test]
fn subscriber_error_codes_keep_the_connection_open() {
    let server = start(&["limits.max_filters_per_connection=2"]);
    let mut c = Client::subscriber(&server);
    c.send_text("{not json");
    expect_error(&mut c, "INVALID_JSON");
    c.send_text("[1,2,3]");
    expect_error(&mut c, "INVALID_MESSAGE");
    c.send(&json!({"type":"subscribe","id":1,"symbols":"BTCUSDT"}));
    let e = expect_error(&mut c, "INVALID_MESSAGE");
    assert_eq!(e["id"], 1);
    assert_eq!(e["message"], "symbols must be an array of strings");
    c.send(&json!({"type":"subscribe","id":2,"dataTypes":[]}));
    expect_error(&mut c, "INVALID_MESSAGE");
    c.send(&json!({"type":"dance","id":3}));
    assert_eq!(expect_error(&mut c, "UNKNOWN_TYPE")["id"], 3);
    c.send(&json!({"type":"publish","id":4}));
    expect_error(&mut c, "FORBIDDEN");
    c.send(&json!({"type":"unsubscribe","id":5,"filterId":"f9"}));
    expect_error(&mut c, "NOT_FOUND");
    c.ws.send(tungstenite::Message::Binary(b"{}"[..].into()))
        .unwrap();
    expect_error(&mut c, "INVALID_MESSAGE");
    c.subscribe(6, &["a"], &[], &[]);
    c.subscribe(7, &["b"], &[], &[]);
    c.send(&json!({"type":"subscribe","id":8,"exchange":["c"]}));
    assert_eq!(expect_error(&mut c, "TOO_MANY_SUBSCRIPTIONS")["id"], 8);
    // Still open and serving.
    c.sync();
    let stats = server.stats();
    assert!(stats.errors_encountered >= 9, "{stats:?}");
}

#[test]
fn oversized_message_gets_message_too_large_then_close_1009() {
    let server = start(&["limits.max_message_bytes=1024"]);
    let mut bystander = Client::subscriber(&server);
    bystander.subscribe(1, &["x"], &[], &[]);
    let mut c = Client::subscriber(&server);
    c.send_text(&format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "a".repeat(2000)
    ));
    expect_error(&mut c, "MESSAGE_TOO_LARGE");
    let close = c.recv_close().expect("close frame");
    assert_eq!(u16::from(close.code), 1009);
    // The other connection on the same worker is not disturbed.
    let mut publ = Client::publisher(&server);
    publ.send(&msg("x", "S", "trade", json!(1)));
    assert_eq!(bystander.recv()["data"], 1);
}

#[test]
fn rate_limited_then_closed_with_1008() {
    let server = start(&[
        "limits.messages_per_sec=1",
        "limits.message_burst=3",
        "limits.rate_limit_strikes=5",
    ]);
    let mut c = Client::subscriber(&server);
    for i in 0..3 {
        c.send(&json!({"type":"ping","id":i}));
        assert_eq!(c.recv()["type"], "pong");
    }
    for _ in 0..5 {
        c.send(&json!({"type":"ping"}));
        expect_error(&mut c, "RATE_LIMITED");
    }
    c.send(&json!({"type":"ping"}));
    let close = c.recv_close().expect("close frame");
    assert_eq!(u16::from(close.code), 1008);
}

#[test]
fn publisher_errors_and_batches() {
    let server = start(&["limits.max_streams=3"]);
    let mut sub = Client::subscriber(&server);
    sub.subscribe(1, &[], &[], &[]);
    let mut p = Client::publisher(&server);
    p.send_text("{broken");
    expect_error(&mut p, "INVALID_JSON");
    p.send(&json!({"exchange":"x","symbol":"S","dataType":"trade"}));
    assert_eq!(
        expect_error(&mut p, "INVALID_MESSAGE")["message"],
        "missing field data"
    );
    p.send(&json!({"exchange":"","symbol":"S","dataType":"trade","data":1}));
    expect_error(&mut p, "INVALID_MESSAGE");
    // A batch: good elements flow, bad ones are reported with their index.
    p.send(&json!([
        msg("x", "A", "trade", json!(1)),
        {"exchange":"x","symbol":5,"dataType":"trade","data":1},
        msg("x", "B", "trade", json!(2)),
        "nonsense"
    ]));
    let e1 = expect_error(&mut p, "INVALID_MESSAGE");
    assert_eq!(e1["index"], 1);
    let e3 = expect_error(&mut p, "INVALID_MESSAGE");
    assert_eq!(e3["index"], 3);
    assert_eq!(sub.recv()["symbol"], "A");
    assert_eq!(sub.recv()["symbol"], "B");
    // Stream limit: the fourth distinct stream is refused, known ones still flow.
    p.send(&msg("x", "C", "trade", json!(3)));
    p.send(&msg("x", "D", "trade", json!(4)));
    expect_error(&mut p, "TOO_MANY_STREAMS");
    p.send(&msg("x", "A", "trade", json!(5)));
    assert_eq!(sub.recv()["symbol"], "C");
    let a = sub.recv();
    assert_eq!(
        (a["symbol"].as_str(), a["seq"].as_u64()),
        (Some("A"), Some(2))
    );
    wait_rejected(&server, 6);
}

fn wait_rejected(server: &tickfan::ServerHandle, n: u64) {
    common::wait_until("rejections counted", || {
        server.stats().messages_rejected == n
    });
}

/// Reads a server frame and returns the close code if it is a close frame.
fn read_close_code(s: &mut TcpStream) -> u16 {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    assert!(all.len() >= 4, "no close frame: {all:?}");
    assert_eq!(all[0], 0x88, "not a close frame: {all:?}");
    u16::from_be_bytes([all[2], all[3]])
}

#[test]
fn hostile_frames_get_rfc6455_close_codes() {
    let server = start(&[]);
    let addr = server.public_addr().unwrap();
    // Unmasked client frame: protocol error 1002.
    let mut s = raw_ws(addr);
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(read_close_code(&mut s), 1002);
    // Invalid UTF-8 in a text frame: 1007.
    let mut s = raw_ws(addr);
    let payload = [0xffu8, 0xfe];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
    assert_eq!(read_close_code(&mut s), 1007);
    // Reserved bits set: 1002.
    let mut s = raw_ws(addr);
    s.write_all(&[0xC1, 0x80, 0, 0, 0, 0]).unwrap();
    assert_eq!(read_close_code(&mut s), 1002);
    // A control frame over 125 bytes (a ping with a 16-bit length): 1002.
    let mut s = raw_ws(addr);
    let mut big_ping = vec![0x89, 0x80 | 126, 0, 200, 0, 0, 0, 0];
    big_ping.extend(std::iter::repeat_n(0u8, 200));
    s.write_all(&big_ping).unwrap();
    assert_eq!(read_close_code(&mut s), 1002);
    // A fragmented control frame (ping without FIN): 1002.
    let mut s = raw_ws(addr);
    s.write_all(&[0x09, 0x80, 0, 0, 0, 0]).unwrap();
    assert_eq!(read_close_code(&mut s), 1002);
    // Unknown opcodes (data 0x3, control 0xB): 1002.
    for op in [0x83u8, 0x8B] {
        let mut s = raw_ws(addr);
        s.write_all(&[op, 0x80, 0, 0, 0, 0]).unwrap();
        assert_eq!(read_close_code(&mut s), 1002);
    }
    // A continuation frame with nothing to continue: 1002.
    let mut s = raw_ws(addr);
    s.write_all(&[0x80, 0x80, 0, 0, 0, 0]).unwrap();
    assert_eq!(read_close_code(&mut s), 1002);
    // Every one was counted as a protocol close.
    common::wait_until("counted", || server.stats().closed.protocol == 8);
    // The server still serves new connections.
    let mut ok = Client::subscriber(&server);
    ok.sync();
}

#[test]
fn rate_and_filter_limits_recover() {
    let server = start(&[
        "limits.messages_per_sec=20",
        "limits.message_burst=2",
        "limits.max_filters_per_connection=1",
    ]);
    let mut c = Client::subscriber(&server);
    c.send(&json!({"type":"ping","id":1}));
    c.send(&json!({"type":"ping","id":2}));
    c.send(&json!({"type":"ping","id":3}));
    assert_eq!(c.recv()["id"], 1);
    assert_eq!(c.recv()["id"], 2);
    expect_error(&mut c, "RATE_LIMITED");
    // The bucket refills at 20/s: 100 ms later a message is accepted again.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let f = c.subscribe(4, &["a"], &[], &[]);
    std::thread::sleep(std::time::Duration::from_millis(60));
    c.send(&json!({"type":"subscribe","id":5,"exchange":["b"]}));
    expect_error(&mut c, "TOO_MANY_SUBSCRIPTIONS");
    std::thread::sleep(std::time::Duration::from_millis(60));
    c.send(&json!({"type":"unsubscribe","id":6,"filterId":f["filterId"]}));
    assert_eq!(c.recv()["type"], "unsubscribed");
    std::thread::sleep(std::time::Duration::from_millis(60));
    c.subscribe(7, &["b"], &[], &[]);
}
