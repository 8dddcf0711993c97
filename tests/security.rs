//! Security rules over real sockets: tokens, channels, expiry and refresh, publisher tokens,
//! origins, per-user policies, connection limits, and an abusive client next to well-behaved
//! ones.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{http, msg, start, status, wait_until, Client, TIMEOUT};
use serde_json::json;
use tickfan::auth::{mint_hs256, Claims};
use tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret";

fn token(sub: &str, ttl_s: i64, channels: Option<&[&str]>, aud: Option<&str>) -> String {
    let now = (tickfan::shared::now_ms() / 1000) as i64;
    let claims = Claims {
        sub: sub.into(),
        exp: (now + ttl_s) as u64,
        aud: aud.map(String::from),
        iss: None,
        channels: channels.map(|c| c.iter().map(|s| s.to_string()).collect()),
    };
    mint_hs256(SECRET, &claims).unwrap()
}

/// Attempts a WebSocket upgrade with extra headers; Ok(client) or Err(HTTP status).
fn try_connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

fn with_auth(extra: &[&'static str]) -> tickfan::ServerHandle {
    let mut o = vec![
        "auth.jwt_secret=\"test-secret\"",
        "auth.jwt_audience=\"tickfan\"",
    ];
    o.extend_from_slice(extra);
    start(&o)
}

#[test]
fn tokens_are_required_and_checked_at_the_handshake() {
    let server = with_auth(&[]);
    let addr = server.public_addr().unwrap();
    let good = token("alice", 60, None, Some("tickfan"));
    assert_eq!(try_connect(addr, "/ws", &[]).err(), Some(401));
    // Change one character inside the signature (not the last, whose low bits are padding).
    let at = good.rfind('.').unwrap() + 5;
    let swapped = if &good[at..=at] == "a" { "b" } else { "a" };
    let forged = format!("{}{swapped}{}", &good[..at], &good[at + 1..]);
    assert_eq!(
        try_connect(addr, &format!("/ws?token={forged}"), &[]).err(),
        Some(401)
    );
    let expired = token("alice", -5, None, Some("tickfan"));
    assert_eq!(
        try_connect(addr, &format!("/ws?token={expired}"), &[]).err(),
        Some(401)
    );
    let wrong_aud = token("alice", 60, None, Some("other"));
    assert_eq!(
        try_connect(addr, &format!("/ws?token={wrong_aud}"), &[]).err(),
        Some(401)
    );
    let other_key = mint_hs256(
        "not-the-secret",
        &Claims {
            sub: "a".into(),
            exp: u64::MAX / 2000,
            aud: Some("tickfan".into()),
            iss: None,
            channels: None,
        },
    )
    .unwrap();
    assert_eq!(
        try_connect(addr, &format!("/ws?token={other_key}"), &[]).err(),
        Some(401)
    );
    let mut c = try_connect(addr, &format!("/ws?token={good}"), &[]).expect("query token");
    c.sync();
    let bearer = format!("Bearer {good}");
    let mut c2 = try_connect(addr, "/ws", &[("Authorization", &bearer)]).expect("bearer token");
    c2.sync();
    assert_eq!(server.stats().refused.unauthorized, 5);
}

#[test]
fn channels_claim_bounds_subscriptions() {
    let server = with_auth(&[]);
    let addr = server.public_addr().unwrap();
    let t = token(
        "bob",
        60,
        Some(&["binance/*/trade", "kraken/BTCUSDT"]),
        Some("tickfan"),
    );
    let mut c = try_connect(addr, &format!("/ws?token={t}"), &[]).unwrap();
    c.subscribe(1, &["binance"], &["BTCUSDT", "ETHUSDT"], &["trade"]);
    c.subscribe(2, &["kraken"], &["BTCUSDT"], &[]);
    for (i, bad) in [
        json!({"type":"subscribe","id":10,"exchange":["binance"]}),
        json!({"type":"subscribe","id":11,"exchange":["binance"],"dataTypes":["ticker"]}),
        json!({"type":"subscribe","id":12,"symbols":["BTCUSDT"],"dataTypes":["trade"]}),
    ]
    .iter()
    .enumerate()
    {
        c.send(bad);
        let e = c.recv_type("error");
        assert_eq!(
            (e["code"].as_str(), e["id"].as_u64()),
            (Some("FORBIDDEN"), Some(10 + i as u64))
        );
    }
    let mut p = Client::publisher(&server);
    p.send(&msg("binance", "BTCUSDT", "ticker", json!(0))); // outside: never delivered
    p.send(&msg("okx", "BTCUSDT", "trade", json!(0))); // outside
    p.send(&msg("binance", "BTCUSDT", "trade", json!(1)));
    p.send(&msg("kraken", "BTCUSDT", "depth", json!(2)));
    assert_eq!(c.recv_type("data")["data"], 1);
    assert_eq!(c.recv_type("data")["data"], 2);
    c.expect_silence(Duration::from_millis(200));
    assert_eq!(server.stats().refused.forbidden_subscriptions, 3);
}

#[test]
fn expired_token_closes_with_1008_unless_refreshed() {
    let server = with_auth(&[]);
    let addr = server.public_addr().unwrap();
    let short = token("carol", 2, None, Some("tickfan"));
    let mut lapsing = try_connect(addr, &format!("/ws?token={short}"), &[]).unwrap();
    let mut refreshing = try_connect(addr, &format!("/ws?token={short}"), &[]).unwrap();
    refreshing
        .send(&json!({"type":"refresh","id":1,"token":token("carol", 60, None, Some("tickfan"))}));
    let r = refreshing.recv();
    assert_eq!(
        (r["type"].as_str(), r["id"].as_u64()),
        (Some("refreshed"), Some(1)),
        "{r}"
    );
    refreshing.send(
        &json!({"type":"refresh","id":2,"token":token("mallory", 60, None, Some("tickfan"))}),
    );
    assert_eq!(refreshing.recv_type("error")["code"], "FORBIDDEN");
    refreshing.send(&json!({"type":"refresh","id":3,"token":"garbage"}));
    assert_eq!(refreshing.recv_type("error")["code"], "FORBIDDEN");
    let t0 = Instant::now();
    let close = lapsing.recv_close().expect("close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "token expired")
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    // The refreshed one outlives the first token.
    std::thread::sleep(Duration::from_millis(500));
    refreshing.sync();
    assert_eq!(server.stats().closed.token_expired, 1);
}

#[test]
fn publishers_need_a_token_when_configured() {
    let server = start(&["auth.publisher_tokens=[\"pub-1\",\"pub-2\"]"]);
    let addr = server.ingest_addr().unwrap();
    assert_eq!(try_connect(addr, "/publish", &[]).err(), Some(401));
    assert_eq!(
        try_connect(addr, "/publish?token=pub-3", &[]).err(),
        Some(401)
    );
    let mut p = try_connect(addr, "/publish", &[("Authorization", "Bearer pub-2")]).unwrap();
    let mut p2 = try_connect(addr, "/publish?token=pub-1", &[]).unwrap();
    let mut sub = Client::subscriber(&server);
    sub.subscribe(1, &["x"], &[], &[]);
    p.send(&msg("x", "A", "trade", json!(1)));
    p2.send(&msg("x", "A", "trade", json!(2)));
    assert_eq!(sub.recv()["seq"], 1);
    assert_eq!(sub.recv()["seq"], 2);
}

#[test]
fn origins_outside_the_allow_list_get_403() {
    let server = start(&["auth.allowed_origins=[\"https://app.example.com\"]"]);
    let addr = server.public_addr().unwrap();
    assert_eq!(
        try_connect(addr, "/ws", &[("Origin", "https://evil.example.com")]).err(),
        Some(403)
    );
    try_connect(addr, "/ws", &[("Origin", "https://app.example.com")])
        .unwrap()
        .sync();
    // Not a browser (no Origin): allowed.
    Client::subscriber(&server).sync();
    assert_eq!(server.stats().refused.origin, 1);
}

fn worker_of(c: &mut Client) -> u64 {
    c.send(&json!({"type":"getStats","id":"w"}));
    c.recv_type("stats")["worker"].as_u64().unwrap()
}

#[test]
fn replace_policy_closes_the_older_connection_with_4002_across_workers() {
    let server = with_auth(&[
        "server.workers=2",
        "limits.connections_per_user=\"replace\"",
    ]);
    let addr = server.public_addr().unwrap();
    let t = token("dave", 60, None, Some("tickfan"));
    let mut older = try_connect(addr, &format!("/ws?token={t}"), &[]).unwrap();
    let mut older_worker = worker_of(&mut older);
    let mut crossed = false;
    for _ in 0..40 {
        let mut newer = try_connect(addr, &format!("/ws?token={t}"), &[]).unwrap();
        let close = older.recv_close().expect("the older connection is closed");
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (4002, "replaced by a newer connection")
        );
        let w = worker_of(&mut newer);
        crossed |= w != older_worker;
        older = newer;
        older_worker = w;
        if crossed {
            break;
        }
    }
    assert!(crossed, "never replaced across workers");
    older.sync();
}

#[test]
fn reject_and_numeric_per_user_limits() {
    let server = with_auth(&["limits.connections_per_user=\"reject\""]);
    let addr = server.public_addr().unwrap();
    let t = token("erin", 60, None, Some("tickfan"));
    let first = try_connect(addr, &format!("/ws?token={t}"), &[]).unwrap();
    assert_eq!(
        try_connect(addr, &format!("/ws?token={t}"), &[]).err(),
        Some(429)
    );
    drop(first);
    wait_until("first closed", || server.stats().active_connections == 0);
    try_connect(addr, &format!("/ws?token={t}"), &[])
        .expect("allowed again")
        .sync();

    let server = with_auth(&["limits.connections_per_user=2"]);
    let addr = server.public_addr().unwrap();
    let _a = try_connect(addr, &format!("/ws?token={t}"), &[]).unwrap();
    let _b = try_connect(addr, &format!("/ws?token={t}"), &[]).unwrap();
    assert_eq!(
        try_connect(addr, &format!("/ws?token={t}"), &[]).err(),
        Some(429)
    );
    let other = token("frank", 60, None, Some("tickfan"));
    try_connect(addr, &format!("/ws?token={other}"), &[])
        .expect("another user")
        .sync();
    assert_eq!(server.stats().refused.per_user, 1);
}

#[test]
fn connection_limits_refuse_and_recover() {
    let server = start(&["limits.max_connections=2"]);
    let addr = server.public_addr().unwrap();
    let a = try_connect(addr, "/ws", &[]).unwrap();
    let _b = try_connect(addr, "/ws", &[]).unwrap();
    assert_eq!(try_connect(addr, "/ws", &[]).err(), Some(503));
    drop(a);
    wait_until("one closed", || server.stats().active_connections == 1);
    try_connect(addr, "/ws", &[]).expect("room again").sync();

    let server = start(&["limits.max_connections_per_ip=3"]);
    let addr = server.public_addr().unwrap();
    let held: Vec<Client> = (0..3)
        .map(|_| try_connect(addr, "/ws", &[]).unwrap())
        .collect();
    assert_eq!(try_connect(addr, "/ws", &[]).err(), Some(429));
    assert_eq!(status(&http(addr, "GET /health HTTP/1.1\r\n\r\n")), 429);
    drop(held);
    wait_until("closed", || server.stats().open_sockets == 0);
    try_connect(addr, "/ws", &[]).expect("room again").sync();

    let server = start(&["limits.new_connections_per_ip_per_min=5"]);
    let addr = server.public_addr().unwrap();
    for _ in 0..5 {
        try_connect(addr, "/ws", &[]).unwrap();
    }
    assert_eq!(try_connect(addr, "/ws", &[]).err(), Some(429));
    assert!(server.stats().refused.per_ip >= 1);
}

#[test]
fn an_abusive_client_does_not_starve_well_behaved_ones() {
    let server = start(&[
        "limits.messages_per_sec=10",
        "limits.message_burst=20",
        "limits.rate_limit_strikes=50",
        "limits.max_message_bytes=4096",
    ]);
    const N: u64 = 300;
    let mut good: Vec<Client> = (0..100).map(|_| Client::subscriber(&server)).collect();
    for c in good.iter_mut() {
        c.subscribe(1, &["x"], &[], &[]);
    }
    let addr = server.public_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let abuser = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rounds += 1;
                let Ok(mut c) = try_connect(addr, "/ws", &[]) else {
                    continue;
                };
                c.ws.get_mut()
                    .set_read_timeout(Some(Duration::from_millis(1)))
                    .unwrap();
                for i in 0..400 {
                    let junk = match i % 4 {
                        0 => "{not json".to_string(),
                        1 => json!({"type":"subscribe","symbols":"x"}).to_string(),
                        2 => json!({"type":"ping","pad":"y".repeat(3000)}).to_string(),
                        _ => json!({"type":"nope"}).to_string(),
                    };
                    if c.ws.send(tungstenite::Message::text(junk)).is_err() {
                        break;
                    }
                    let _ = c.ws.read();
                }
            }
            rounds
        })
    };
    let mut p = Client::publisher(&server);
    for i in 0..N {
        p.send(&msg("x", "A", "trade", json!(i)));
        if i % 30 == 29 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for c in good.iter_mut() {
        for i in 1..=N {
            assert_eq!(c.recv_type("data")["seq"], i);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(abuser.join().unwrap() >= 1);
    let s = server.stats();
    assert!(s.closed.rate_limit >= 1, "{:?}", s.closed);
    assert_eq!(
        s.delivery.dropped_slow_consumer + s.delivery.disconnected_slow,
        0
    );
}

#[test]
fn rs256_and_es256_tokens_with_a_public_key() {
    let dir = env!("CARGO_MANIFEST_DIR");
    for (alg, name) in [
        (jsonwebtoken::Algorithm::ES256, "es256"),
        (jsonwebtoken::Algorithm::RS256, "rs256"),
    ] {
        let public = format!("{dir}/tests/fixtures/{name}-public.pem");
        let private = std::fs::read(format!("{dir}/tests/fixtures/{name}-private.pem")).unwrap();
        let alg_name = if name == "es256" { "ES256" } else { "RS256" };
        let server = start(&[
            &format!("auth.jwt_public_key_file=\"{public}\""),
            &format!("auth.jwt_algorithm=\"{alg_name}\""),
        ]);
        let key = match alg {
            jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&private),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(&private),
        }
        .unwrap();
        let claims = Claims {
            sub: "gina".into(),
            exp: tickfan::shared::now_ms() / 1000 + 60,
            aud: None,
            iss: None,
            channels: None,
        };
        let good = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap();
        let addr = server.public_addr().unwrap();
        try_connect(addr, &format!("/ws?token={good}"), &[])
            .expect(alg_name)
            .sync();
        // An HS256 token (signed with anything) is not accepted by a public-key server.
        let hs = mint_hs256("whatever", &claims).unwrap();
        assert_eq!(
            try_connect(addr, &format!("/ws?token={hs}"), &[]).err(),
            Some(401)
        );
    }
}
