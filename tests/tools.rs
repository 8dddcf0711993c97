//! `tickfan sub` and `tickfan pub` (the binary) against a real gateway.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{Guard, BIN};
use common::{msg, start, Client};
use serde_json::{json, Value};

/// Starts `tickfan sub URL args...` with stdout and stderr piped.
fn sub(url: &str, args: &[&str]) -> Guard {
    Guard(
        Command::new(BIN)
            .arg("sub")
            .arg(url)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn wait_output(mut g: Guard) -> (String, String) {
    let t0 = std::time::Instant::now();
    while g.0.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "tickfan sub did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    let mut err = String::new();
    std::io::Read::read_to_string(g.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    if let Some(e) = g.0.stderr.as_mut() {
        std::io::Read::read_to_string(e, &mut err).unwrap();
    }
    (out, err)
}

#[test]
fn pub_reports_errors_per_line_and_sub_prints_what_was_accepted() {
    let server = start(&["limits.max_streams=3"]);
    let ws = format!("ws://{}/ws", server.public_addr().unwrap());
    let mut s = sub(&ws, &["--exchange", "binance", "--count", "4", "--json"]);
    // Wait until its subscription is in place.
    let mut stderr = BufReader::new(s.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("connected to"), "{line}");
    common::wait_until("subscribed", || server.stats().total_subscriptions == 1);

    let input = [
        r#"{"exchange":"binance","symbol":"A","dataType":"trade","data":{"p":1}}"#,
        "not json",
        "# a comment",
        "",
        r#"[{"exchange":"binance","symbol":"B","dataType":"trade","data":1},{"exchange":"binance","data":2}]"#,
        r#"{"exchange":"binance","symbol":"C","dataType":"trade","data":3}"#,
        r#"{"exchange":"binance","symbol":"D","dataType":"trade","data":4}"#,
        r#"{"exchange":"binance","symbol":"A","dataType":"trade","data":{"p":2}}"#,
    ]
    .join("\n");
    let mut p = Command::new(BIN)
        .arg("pub")
        .arg(format!("ws://{}/publish", server.ingest_addr().unwrap()))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "errors make exit code 1: {report}"
    );
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines[0].starts_with("line 2: INVALID_JSON"), "{report}");
    assert!(
        lines[1].starts_with("line 5: INVALID_MESSAGE missing field symbol (element 1)"),
        "{report}"
    );
    assert!(lines[2].starts_with("line 7: TOO_MANY_STREAMS"), "{report}");
    assert_eq!(lines[3], "6 lines sent, 3 errors on 3 lines", "{report}");

    let (printed, _) = wait_output(s);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("4 messages, 0 gaps"), "{rest}");
    let got: Vec<(String, u64)> = printed
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["symbol"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [("A", 1), ("B", 1), ("C", 1), ("A", 2)]
        .iter()
        .map(|(s, q)| (s.to_string(), *q))
        .collect();
    assert_eq!(got, want);
}

/// Publishes trade i (1..=n) on binance:BTCUSDT every `every`.
fn publish_slowly(
    server: &tickfan::ServerHandle,
    n: u64,
    every: Duration,
) -> std::thread::JoinHandle<()> {
    let mut p = Client::publisher(server);
    std::thread::spawn(move || {
        for i in 1..=n {
            p.send(&msg("binance", "BTCUSDT", "trade", json!({"i": i})));
            std::thread::sleep(every);
        }
    })
}

#[test]
fn sub_reconnects_and_resumes_without_a_gap() {
    // Every connection ends after about a second (1001): sub must come back and resume.
    let server = start(&["limits.max_lifetime_ms=1000", "history.size=1000"]);
    let ws = format!("ws://{}/ws", server.public_addr().unwrap());
    let s = sub(
        &ws,
        &["--json", "--count", "150", "--reconnect-min-ms", "100"],
    );
    common::wait_until("subscribed", || server.stats().total_subscriptions == 1);
    let publisher = publish_slowly(&server, 150, Duration::from_millis(20));
    let (out, err) = wait_output(s);
    publisher.join().unwrap();
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=150).collect::<Vec<_>>(), "{err}");
    assert!(err.contains("reconnecting in"), "{err}");
    assert!(err.contains("resumed 1 stream(s) without a gap"), "{err}");
    assert!(!err.contains("gap:"), "{err}");
    assert!(err.contains("150 messages, 0 gaps (0 missed)"), "{err}");
}

#[test]
fn sub_reports_what_it_could_not_resume() {
    // A history of 2 messages cannot cover what is published while sub is away.
    let server = start(&["limits.max_lifetime_ms=1000", "history.size=2"]);
    let ws = format!("ws://{}/ws", server.public_addr().unwrap());
    let s = sub(
        &ws,
        &["--count", "120", "--reconnect-min-ms", "300", "--snapshot"],
    );
    common::wait_until("subscribed", || server.stats().total_subscriptions == 1);
    let publisher = publish_slowly(&server, 400, Duration::from_millis(10));
    let (out, err) = wait_output(s);
    publisher.join().unwrap();
    assert!(
        err.contains("gap: could not resume binance:BTCUSDT:trade: history no longer reaches back"),
        "{err}"
    );
    assert!(
        out.contains("(snapshot)"),
        "after a failed resume, the stream starts from its snapshot"
    );
    assert!(
        out.lines()
            .all(|l| l.contains(" binance ") && l.contains("BTCUSDT") && l.contains(" #")),
        "{out}"
    );
}
