//! Upstream connectors against a mock exchange (a real WebSocket server speaking Binance's
//! stream format) that drops the connection, sends garbage, and stalls.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, Client};
use serde_json::{json, Value};
use tungstenite::Message;

const SUBSCRIBE: &str = r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}"#;

/// What the mock does with one connection.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Sends trades, then drops the TCP connection without a close frame.
    SendThenDrop(u64, u64),
    /// Sends garbage, then trades, then goes silent (reads nothing, answers no ping).
    GarbageThenStall(u64, u64),
    /// Sends trades and stays, answering pings.
    SendAndStay(u64, u64),
}

fn trade(i: u64) -> String {
    json!({"stream":"btcusdt@trade","data":{"e":"trade","E":1_700_000_000_000u64 + i,"s":"BTCUSDT","t":i,"p":"50000.1","q":"0.01","T":1_700_000_000_000u64 + i,"m":true,"M":true}}).to_string()
}

struct Mock {
    url: String,
    accepted_at: Arc<Mutex<Vec<Instant>>>,
    /// Connections found still open when a new one arrived (must stay 0).
    overlaps: Arc<AtomicUsize>,
    /// Connections whose first frame was the subscribe request.
    subscribed: Arc<AtomicUsize>,
}

fn start_mock(script: Vec<Act>) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "ws://{}/stream?streams=btcusdt@trade",
        listener.local_addr().unwrap()
    );
    let accepted_at = Arc::new(Mutex::new(Vec::new()));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let (a, o, s) = (accepted_at.clone(), overlaps.clone(), subscribed.clone());
    thread::spawn(move || {
        let mut previous: Option<TcpStream> = None;
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(conn) = conn else { return };
            a.lock().unwrap().push(Instant::now());
            if let Some(prev) = previous.take() {
                if still_open(prev) {
                    o.fetch_add(1, Ordering::SeqCst);
                }
            }
            previous = conn.try_clone().ok();
            let act = script.get(n).copied().unwrap_or(Act::SendAndStay(0, 0));
            let s = s.clone();
            thread::spawn(move || serve(conn, act, &s));
        }
    });
    Mock {
        url,
        accepted_at,
        overlaps,
        subscribed,
    }
}

/// Whether the peer has not closed this connection (reads what is left, then EOF or not).
fn still_open(mut s: TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

fn serve(conn: TcpStream, act: Act, subscribed: &AtomicUsize) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let Ok(mut ws) = tungstenite::accept(conn) else {
        return;
    };
    if let Ok(Message::Text(t)) = ws.read() {
        if t.as_str() == SUBSCRIBE {
            subscribed.fetch_add(1, Ordering::SeqCst);
        }
    }
    let _ = ws.send(Message::text(r#"{"result":null,"id":1}"#));
    let send = |ws: &mut tungstenite::WebSocket<TcpStream>, from: u64, to: u64| {
        for i in from..=to {
            let _ = ws.send(Message::text(trade(i)));
        }
    };
    match act {
        Act::SendThenDrop(from, to) => {
            send(&mut ws, from, to);
            // Dropped without a close frame (shutdown: the accept loop holds a clone).
            let _ = ws.get_mut().shutdown(std::net::Shutdown::Both);
        }
        Act::GarbageThenStall(from, to) => {
            let _ = ws.send(Message::text("garbage{"));
            let _ = ws.send(Message::binary(vec![1u8, 2, 3]));
            let _ = ws.send(Message::text(r#"{"e":"somethingNew","s":"BTCUSDT"}"#));
            send(&mut ws, from, to);
            // Silent: no reads, so no pongs, until the connector gives up on us.
            thread::sleep(Duration::from_secs(4));
        }
        Act::SendAndStay(from, to) => {
            if from > 0 {
                send(&mut ws, from, to);
            }
            ws.get_mut()
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            while ws.read().is_ok() {}
        }
    }
}

fn read_trades(c: &mut Client, upto: u64) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    while got.last().map(|&(_, t)| t) != Some(upto) {
        let v = c.recv();
        if v["type"] == "data" {
            got.push((v["seq"].as_u64().unwrap(), v["data"]["t"].as_u64().unwrap()));
        }
    }
    got
}

#[test]
fn connector_survives_drops_garbage_and_stalls_with_one_connection_at_a_time() {
    let mock = start_mock(vec![
        Act::SendThenDrop(1, 5),
        Act::GarbageThenStall(6, 10),
        Act::SendAndStay(11, 15),
    ]);
    let entry = format!(
        "upstream=[{{name=\"mock\", url=\"{}\", exchange=\"binance\", subscribe=['{SUBSCRIBE}'], ping_interval_ms=200, stale_after_ms=1000, reconnect_min_ms=300, reconnect_max_ms=2000}}]",
        mock.url
    );
    let server = common::start(&[entry.as_str()]);
    let mut c = Client::subscriber(&server);
    c.subscribe(1, &["binance"], &["BTCUSDT"], &["trade"]);
    // The first trades may be published before the subscribe: count from what arrives.
    let got = read_trades(&mut c, 15);
    let trades: Vec<u64> = got.iter().map(|&(_, t)| t).collect();
    let first = trades[0];
    assert_eq!(
        trades,
        (first..=15).collect::<Vec<_>>(),
        "every trade once, in order"
    );
    assert!(got.windows(2).all(|w| w[1].0 == w[0].0 + 1), "dense seqs");

    wait_until("third connection up", || {
        server.stats().upstreams[0].state == tickfan::stats::sources::LinkState::Up
            && server.stats().upstreams[0].connects == 3
    });
    let u = server.stats().upstreams[0].clone();
    assert_eq!(u.disconnects, 2, "{u:?}");
    assert_eq!(u.stale, 1, "{u:?}");
    assert_eq!(u.unmapped, 3, "garbage, binary, unknown event: {u:?}");
    assert_eq!(u.messages, 15, "{u:?}");
    assert_eq!(u.instance, 3);
    assert_eq!(
        mock.subscribed.load(Ordering::SeqCst),
        3,
        "subscribe sent on every connection"
    );
    assert_eq!(
        mock.overlaps.load(Ordering::SeqCst),
        0,
        "never two connections at once"
    );
    let at = mock.accepted_at.lock().unwrap().clone();
    // Backoff 300 ms then 600 ms, +/-30%; the stall adds the stale timeout.
    let gap1 = at[1] - at[0];
    let gap2 = at[2] - at[1];
    assert!(gap1 >= Duration::from_millis(200), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(1000 + 400), "{gap2:?}");
    let h = tickfan::admin::health::check(server.shared(), &server.stats());
    assert_eq!(h.upstreams.len(), 1);
    let v: Value = serde_json::to_value(&h).unwrap();
    assert_eq!(v["upstreams"][0]["state"], "up", "{v}");
}

#[test]
fn an_unreachable_upstream_is_reported_and_retried() {
    // A port with nothing listening.
    let port = common::external::free_port();
    let entry = format!(
        "upstream=[{{name=\"gone\", url=\"ws://127.0.0.1:{port}/ws\", exchange=\"x\", reconnect_min_ms=100, reconnect_max_ms=200}}]"
    );
    let server = common::start(&[entry.as_str()]);
    wait_until("several attempts", || {
        server.stats().upstreams[0].connects >= 3
    });
    let u = server.stats().upstreams[0].clone();
    assert!(u.disconnects >= 2);
    assert!(u.last_error.unwrap_or_default().contains("connect failed"));
    let h = tickfan::admin::health::check(server.shared(), &server.stats());
    assert_eq!(h.status, tickfan::admin::health::Status::Degraded);
    assert!(
        h.reasons.iter().any(|r| r.contains("upstream gone")),
        "{:?}",
        h.reasons
    );
}

#[test]
fn a_wss_upstream_that_does_not_speak_tls_fails_the_handshake_and_is_retried() {
    // A plain TCP server answering a TLS client with an HTTP error: the TLS handshake fails
    // (the connector has a TLS stack and reports it), and the connector keeps retrying.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = std::io::Write::write_all(&mut conn, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let entry = format!(
        "upstream=[{{name=\"tls\", url=\"wss://127.0.0.1:{port}/ws\", exchange=\"x\", reconnect_min_ms=100, reconnect_max_ms=200}}]"
    );
    let server = common::start(&[entry.as_str()]);
    wait_until("two attempts", || server.stats().upstreams[0].connects >= 2);
    let err = server.stats().upstreams[0]
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(err.contains("handshake"), "{err}");
}
