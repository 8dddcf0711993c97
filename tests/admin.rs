//! The admin listener over real HTTP: health rules, stats fields, Prometheus text parsed
//! strictly, flush; and the systemd watchdog rule that a stalled worker stops the pings.

mod common;

use std::collections::{HashMap, HashSet};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{http, msg, start, status, wait_until, Client};
use serde_json::{json, Value};

fn body(response: &str) -> &str {
    response.split("\r\n\r\n").nth(1).unwrap_or("")
}

fn get(server: &tickfan::ServerHandle, path: &str) -> String {
    http(
        server.admin_addr().unwrap(),
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
}

/// A strict reader of the Prometheus text format (0.0.4): every sample belongs to a family
/// declared by one HELP and one TYPE line before it; names, labels and values are well formed.
/// Returns the samples as "name{labels}" → value.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let valid_name = |n: &str| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            assert!(helps.insert(name.to_string()), "duplicate HELP {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(helps.contains(name), "TYPE before HELP for {name}");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "duplicate TYPE {name}"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "unexpected line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels close");
                for pair in split_labels(labels) {
                    let (k, v) = pair.split_once('=').expect("label has =");
                    assert!(valid_name(k), "label name {k}");
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "label value {v}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "metric name {name}");
        let family = [
            name,
            name.trim_end_matches("_sum"),
            name.trim_end_matches("_count"),
        ]
        .into_iter()
        .find(|f| types.contains_key(*f))
        .unwrap_or_else(|| panic!("sample {name} has no TYPE before it"));
        if family != name {
            assert!(
                ["summary", "histogram"].contains(&types[family].as_str()),
                "{line}"
            );
        }
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

/// Splits `a="x",b="y, z"` at commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[test]
fn health_stats_metrics_and_flush() {
    let server = start(&["server.workers=2"]);
    let mut sub = Client::subscriber(&server);
    sub.subscribe(1, &["x"], &[], &[]);
    let mut p = Client::publisher(&server);
    for i in 0..50 {
        p.send(&msg("x", "A", "trade", json!(i)));
    }
    for _ in 0..50 {
        sub.recv();
    }
    p.send_text("{bad");
    p.recv_type("error");
    sub.send_text("nope");
    sub.recv_type("error");
    // Latency is published by the housekeeping tick (250 ms).
    wait_until("latency published", || {
        server.stats().latency_ms.count >= 50
    });

    let h = get(&server, "/health");
    assert_eq!(status(&h), 200, "{h}");
    let v: Value = serde_json::from_str(body(&h)).unwrap();
    assert_eq!(v["status"], "healthy", "{v}");
    assert_eq!(v["connections"], 1);
    for key in ["uptime", "lastError", "performance", "reasons"] {
        assert!(v.get(key).is_some(), "health lacks {key}: {v}");
    }
    assert!(v["performance"]["avgLatency"].as_f64().unwrap() > 0.0);
    assert!(v["performance"]["memoryUsage"].as_u64().unwrap() > 1_000_000);

    let st = get(&server, "/stats");
    let v: Value = serde_json::from_str(body(&st)).unwrap();
    assert_eq!(v["totalConnections"], 1);
    assert_eq!(v["activeConnections"], 1);
    assert_eq!(v["messagesForwarded"], 50);
    assert_eq!(v["acceptedFromPublishers"], 50);
    assert_eq!(v["messagesRejected"], 1);
    assert_eq!(v["latencyMs"]["count"], 50);
    for q in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(v["latencyMs"][q].as_f64().unwrap() > 0.0, "{q}: {v}");
    }
    assert_eq!(v["workers"].as_array().unwrap().len(), 2);
    assert_eq!(v["publisherList"].as_array().map(Vec::len), Some(1), "{v}");
    let codes: HashMap<String, u64> = serde_json::from_value(json!(v["errorsByCode"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap()))
        .collect::<HashMap<_, _>>()))
    .unwrap();
    assert_eq!(codes["INVALID_JSON"], 1);

    let m = get(&server, "/metrics");
    assert_eq!(status(&m), 200);
    assert!(m.contains("Content-Type: text/plain; version=0.0.4"), "{m}");
    let samples = parse_prometheus(body(&m));
    assert_eq!(samples["tickfan_connections_active"], 1.0);
    assert_eq!(samples["tickfan_messages_routed_total"], 50.0);
    assert_eq!(
        samples["tickfan_messages_accepted_total{source=\"publisher\"}"],
        50.0
    );
    assert_eq!(samples["tickfan_errors_total{code=\"INVALID_JSON\"}"], 1.0);
    assert_eq!(samples["tickfan_delivery_latency_seconds_count"], 50.0);
    assert!(samples["tickfan_delivery_latency_seconds{quantile=\"0.99\"}"] > 0.0);
    assert_eq!(samples["tickfan_health_status"], 0.0);

    let admin = server.admin_addr().unwrap();
    let f = http(
        admin,
        "POST /flush HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status(&f), 200, "{f}");
    let v: Value = serde_json::from_str(body(&f)).unwrap();
    assert_eq!(
        (v["workers"].as_u64(), v["workersAnswered"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(status(&http(admin, "GET /flush HTTP/1.1\r\n\r\n")), 405);
    assert_eq!(
        status(&http(
            admin,
            "POST /stats HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )),
        405
    );
    assert_eq!(
        status(&http(admin, "DELETE /metrics HTTP/1.1\r\n\r\n")),
        405
    );
    assert_eq!(status(&http(admin, "GET /nope HTTP/1.1\r\n\r\n")), 404);
}

#[test]
fn health_is_unhealthy_when_every_worker_is_stalled_or_ingest_is_silent() {
    let server = start(&["health.worker_stall_ms=300"]);
    assert!(server.stall_worker(0, Duration::from_millis(3000)));
    let mut unhealthy = String::new();
    wait_until("unhealthy", || {
        unhealthy = get(&server, "/health");
        status(&unhealthy) == 503
    });
    let v: Value = serde_json::from_str(body(&unhealthy)).unwrap();
    assert_eq!(v["status"], "unhealthy");
    assert!(
        v["reasons"][0].as_str().unwrap().contains("no worker loop"),
        "{v}"
    );
    wait_until("healthy again", || status(&get(&server, "/health")) == 200);

    let quiet = start(&["health.max_ingest_silence_ms=200"]);
    std::thread::sleep(Duration::from_millis(400));
    let h = get(&quiet, "/health");
    assert_eq!(status(&h), 503, "{h}");
    assert!(body(&h).contains("no message accepted"), "{h}");
    let mut p = Client::publisher(&quiet);
    p.send(&msg("x", "A", "trade", json!(1)));
    wait_until("accepting again", || status(&get(&quiet, "/health")) == 200);
}

#[test]
fn stalled_worker_stops_the_watchdog() {
    let server = start(&["server.workers=2", "health.worker_stall_ms=300"]);
    let dir = std::env::temp_dir().join(format!("tickfan-wd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let notifier = tickfan::notify::Notifier::new(path.to_str().unwrap()).unwrap();
    let mut watchdog = tickfan::supervisor::Watchdog::new(Duration::from_millis(50));
    let shared = server.shared().clone();
    let t0 = Instant::now();
    let mut pings = Vec::new();
    let mut stalled_at = None;
    let mut buf = [0u8; 64];
    while t0.elapsed() < Duration::from_millis(3000) {
        if stalled_at.is_none() && t0.elapsed() > Duration::from_millis(500) {
            assert!(server.stall_worker(1, Duration::from_millis(1200)));
            stalled_at = Some(t0.elapsed());
        }
        watchdog.tick(&shared, &notifier);
        if let Ok(n) = listener.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1");
            pings.push(t0.elapsed());
        }
    }
    let stalled_at = stalled_at.unwrap();
    assert!(
        pings.iter().any(|t| *t < stalled_at),
        "pings before the stall: {pings:?}"
    );
    assert!(
        pings
            .iter()
            .any(|t| *t > stalled_at + Duration::from_millis(1300)),
        "pings after: {pings:?}"
    );
    // During the stall (after the 300 ms stall threshold, before it ends) no ping went out.
    let quiet = stalled_at + Duration::from_millis(450)..stalled_at + Duration::from_millis(1150);
    assert!(
        !pings.iter().any(|t| quiet.contains(t)),
        "ping during the stall: {pings:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn each_worker_reports_whether_it_writes_through_io_uring() {
    // With io_uring on (the default), a worker uses it wherever this process can make a ring.
    // The probe ring is made and closed on a thread of its own: closing it notifies the thread
    // that made it, which would interrupt this one's reads (Worker::open_ring).
    let available = std::thread::spawn(|| tickfan::net::uring::SendRing::new(8).is_ok())
        .join()
        .unwrap();
    let on: &[&str] = &[];
    let off: &[&str] = &["server.io_uring=false"];
    for (overrides, expect) in [(on, available), (off, false)] {
        let server = start(overrides);
        let st = get(&server, "/stats");
        let v: Value = serde_json::from_str(body(&st)).unwrap();
        assert_eq!(v["workers"][0]["ioUring"], expect, "{overrides:?}: {v}");
        let samples = parse_prometheus(body(&get(&server, "/metrics")));
        assert_eq!(
            samples["tickfan_worker_io_uring{worker=\"0\"}"],
            if expect { 1.0 } else { 0.0 },
            "{overrides:?}"
        );
    }
}
