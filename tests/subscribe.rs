//! Subscriber protocol over real sockets: filters, wildcards, unsubscribe, ping, heartbeat,
//! getStats.

mod common;

use common::{msg, start, Client};
use serde_json::json;
use std::time::Duration;

#[test]
fn exact_filter_gets_only_its_stream_with_seq_ts_and_raw_data() {
    let server = start(&[]);
    let mut sub = Client::subscriber(&server);
    let reply = sub.subscribe(1, &["binance"], &["BTCUSDT"], &["trade"]);
    assert_eq!(reply["filterId"], "f1");
    assert_eq!(reply["exchange"], json!(["binance"]));
    assert_eq!(reply["symbols"], json!(["BTCUSDT"]));
    assert_eq!(reply["dataTypes"], json!(["trade"]));

    let mut publ = Client::publisher(&server);
    publ.send(&msg("binance", "ETHUSDT", "trade", json!({"price":"1"})));
    publ.send(&msg("binance", "BTCUSDT", "ticker", json!({"bid":"1"})));
    publ.send(&msg("kraken", "BTCUSDT", "trade", json!({"price":"2"})));
    // Data bytes are forwarded verbatim, spacing and key order included.
    publ.send_text(
        r#"{"exchange":"binance","symbol":"BTCUSDT","dataType":"trade","ts":1732300000123,"data":{"qty" : "0.01","price":"50000.1"}}"#,
    );
    publ.send(&msg("binance", "BTCUSDT", "trade", json!({"n":2})));

    let first = sub.ws.read().unwrap().into_text().unwrap();
    assert_eq!(
        first.as_str(),
        r#"{"type":"data","exchange":"binance","symbol":"BTCUSDT","dataType":"trade","seq":1,"ts":1732300000123,"data":{"qty" : "0.01","price":"50000.1"}}"#
    );
    let second = sub.recv();
    assert_eq!(second["seq"], 2);
    assert_eq!(second["data"]["n"], 2);
    // No ts from the publisher: the gateway's receive time.
    let ts = second["ts"].as_u64().unwrap();
    assert!(ts > 1_700_000_000_000, "{ts}");
    sub.expect_silence(Duration::from_millis(200));
}

#[test]
fn wildcards_match_streams_that_appear_later() {
    let server = start(&[]);
    let mut missing_fields = Client::subscriber(&server);
    missing_fields.subscribe(1, &["binance"], &[], &[]);
    let mut star = Client::subscriber(&server);
    let reply = star.subscribe(1, &["*"], &["NEWCOIN"], &["*"]);
    assert_eq!(reply["exchange"], json!(["*"]));

    let mut publ = Client::publisher(&server);
    publ.send(&msg("binance", "NEWCOIN", "kline", json!({"o":1})));
    publ.send(&msg("okx", "NEWCOIN", "trade", json!({"p":2})));
    publ.send(&msg("binance", "OTHER", "depth", json!({"b":[]})));

    let a1 = missing_fields.recv();
    let a2 = missing_fields.recv();
    assert_eq!(
        (a1["symbol"].as_str(), a1["dataType"].as_str()),
        (Some("NEWCOIN"), Some("kline"))
    );
    assert_eq!(
        (a2["symbol"].as_str(), a2["dataType"].as_str()),
        (Some("OTHER"), Some("depth"))
    );
    let b1 = star.recv();
    let b2 = star.recv();
    assert_eq!(
        (b1["exchange"].as_str(), b2["exchange"].as_str()),
        (Some("binance"), Some("okx"))
    );
    missing_fields.expect_silence(Duration::from_millis(100));
    star.expect_silence(Duration::from_millis(100));
}

#[test]
fn overlapping_filters_deliver_once() {
    let server = start(&[]);
    let mut sub = Client::subscriber(&server);
    sub.subscribe(1, &["binance"], &[], &[]);
    sub.subscribe(2, &[], &["BTCUSDT"], &["trade"]);
    sub.subscribe(3, &["*"], &["*"], &["*"]);
    // An identical filter is not added twice: the same id comes back.
    let again = sub.subscribe(4, &["binance"], &[], &[]);
    assert_eq!(again["filterId"], "f1");
    let mut publ = Client::publisher(&server);
    for i in 0..20 {
        publ.send(&msg("binance", "BTCUSDT", "trade", json!(i)));
    }
    for i in 0..20u64 {
        let v = sub.recv();
        assert_eq!(
            (v["seq"].as_u64(), v["data"].as_u64()),
            (Some(i + 1), Some(i))
        );
    }
    sub.expect_silence(Duration::from_millis(200));
}

#[test]
fn unsubscribe_by_filter_id_and_by_fields() {
    let server = start(&[]);
    let mut sub = Client::subscriber(&server);
    let f_btc = sub.subscribe(1, &["binance"], &["BTCUSDT"], &["trade"]);
    sub.subscribe(2, &["binance"], &["ETHUSDT"], &["trade"]);
    sub.subscribe(3, &["binance"], &["MARK"], &["trade"]);
    let mut publ = Client::publisher(&server);
    let marker = |p: &mut Client, n: u64| p.send(&msg("binance", "MARK", "trade", json!(n)));

    sub.send(&json!({"type":"unsubscribe","id":10,"filterId":f_btc["filterId"]}));
    let r = sub.recv();
    assert_eq!(r, json!({"type":"unsubscribed","id":10,"filterId":"f1"}));
    // Fields in another order still name the same filter.
    sub.send(&json!({"type":"unsubscribe","id":11,"dataTypes":["trade"],"symbols":["ETHUSDT"],"exchange":["binance"]}));
    assert_eq!(
        sub.recv(),
        json!({"type":"unsubscribed","id":11,"filterId":"f2"})
    );

    publ.send(&msg("binance", "BTCUSDT", "trade", json!(0)));
    publ.send(&msg("binance", "ETHUSDT", "trade", json!(0)));
    marker(&mut publ, 1);
    let v = sub.recv();
    assert_eq!(
        (v["symbol"].as_str(), v["data"].as_u64()),
        (Some("MARK"), Some(1))
    );

    // Unknown ids and fields: NOT_FOUND, and the connection stays usable.
    sub.send(&json!({"type":"unsubscribe","id":12,"filterId":"f1"}));
    let e = sub.recv();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_u64()),
        (Some("error"), Some("NOT_FOUND"), Some(12))
    );
    sub.send(&json!({"type":"unsubscribe","id":13,"exchange":["nowhere"]}));
    assert_eq!(sub.recv()["code"], "NOT_FOUND");
    marker(&mut publ, 2);
    assert_eq!(sub.recv()["data"], 2);
}

#[test]
fn seq_is_per_stream_and_in_order() {
    let server = start(&["server.workers=2"]);
    let mut subs: Vec<Client> = (0..6).map(|_| Client::subscriber(&server)).collect();
    for s in subs.iter_mut() {
        s.subscribe(1, &["x"], &[], &[]);
    }
    let mut publ = Client::publisher(&server);
    let streams = ["A", "B", "C"];
    for round in 0..100 {
        let batch: Vec<_> = streams
            .iter()
            .map(|s| msg("x", s, "trade", json!(round)))
            .collect();
        publ.send(&json!(batch));
    }
    for s in subs.iter_mut() {
        let mut next = [1u64; 3];
        for _ in 0..300 {
            let v = s.recv();
            let i = streams.iter().position(|x| *x == v["symbol"]).unwrap();
            assert_eq!(v["seq"].as_u64(), Some(next[i]), "{v}");
            assert_eq!(v["data"].as_u64(), Some(next[i] - 1));
            next[i] += 1;
        }
    }
}

#[test]
fn ping_heartbeat_and_websocket_ping() {
    let server = start(&[]);
    let mut c = Client::subscriber(&server);
    c.send(&json!({"type":"ping","id":4}));
    let pong = c.recv();
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_u64()),
        (Some("pong"), Some(4))
    );
    assert!(pong["ts"].as_u64().unwrap() > 1_700_000_000_000);
    c.send(&json!({"type":"heartbeat"}));
    let ack = c.recv();
    assert_eq!(ack["type"], "heartbeat_ack");
    assert!(ack["ts"].is_u64());
    c.ws.send(tungstenite::Message::Ping(b"hi"[..].into()))
        .unwrap();
    match c.ws.read().unwrap() {
        tungstenite::Message::Pong(p) => assert_eq!(&p[..], b"hi"),
        other => panic!("expected pong, got {other:?}"),
    }
}

#[test]
fn get_stats_reports_this_connection() {
    let server = start(&[]);
    let mut c = Client::subscriber(&server);
    c.subscribe(1, &["x"], &[], &[]);
    let mut publ = Client::publisher(&server);
    for i in 0..5 {
        publ.send(&msg("x", "S", "trade", json!(i)));
    }
    for _ in 0..5 {
        c.recv();
    }
    c.send(&json!({"type":"getStats","id":5}));
    let s = c.recv();
    assert_eq!(
        (s["type"].as_str(), s["id"].as_u64()),
        (Some("stats"), Some(5))
    );
    assert_eq!(s["dataMessagesQueued"], 5);
    assert_eq!(s["filters"], 1);
    assert_eq!(s["streams"], 1);
    assert_eq!(s["messagesReceived"], 2);
    assert!(s["framesSent"].as_u64().unwrap() >= 6, "{s}");
    assert!(s["bytesSent"].as_u64().unwrap() > 0);
    assert!(s["connectedAt"].as_u64().unwrap() > 1_700_000_000_000);
}
