//! The `tickfan` binary: help, configuration errors, and a run with the synthetic feed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Client;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_tickfan");

/// Kills the child by pid when the test ends, whatever happens.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn help_lists_every_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--ingest",
        "--admin",
        "--workers",
        "--feed",
        "--log-level",
        "--set",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn config_errors_name_the_key_and_exit_non_zero() {
    let out = Command::new(BIN)
        .args(["--set", "limits.max_connections=abc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.max_connections"), "{err}");

    let dir = std::env::temp_dir().join(format!("tickfan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[limits]\nmax_filters_per_connection = 0\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_filters_per_connection"));
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    let out = Command::new(BIN)
        .args(["--workers", "5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts the binary and returns it with the public address it logged.
fn spawn(
    args: &[&str],
) -> (
    Guard,
    std::net::SocketAddr,
    Vec<String>,
    mpsc::Receiver<String>,
) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let guard = Guard(child);
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(common::TIMEOUT)
            .expect("the server logs its address");
        if let Some(rest) = line.split("subscribe at ws://").nth(1) {
            let addr = rest.trim_end_matches("/ws").parse().unwrap();
            seen.push(line);
            return (guard, addr, seen, rx);
        }
        seen.push(line);
    }
}

#[test]
fn synthetic_feed_flows_by_default_and_sigterm_exits_zero() {
    let (mut guard, addr, mut seen, logs) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--ingest",
        "off",
        "--admin",
        "off",
        "--workers",
        "1",
        "--log-level",
        "debug",
    ]);
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let (ws, _) = tungstenite::client::client(format!("ws://{addr}/ws").as_str(), stream).unwrap();
    let mut c = Client { ws };
    c.send(&json!({"type":"subscribe","id":1,"exchange":["binance"],"symbols":["BTCUSDT"]}));
    assert_eq!(c.recv()["type"], "subscribed");
    let mut types = std::collections::HashSet::new();
    while types.len() < 3 {
        let v = c.recv();
        assert_eq!(
            (v["exchange"].as_str(), v["symbol"].as_str()),
            (Some("binance"), Some("BTCUSDT"))
        );
        assert!(v["data"].is_object());
        types.insert(v["dataType"].as_str().unwrap().to_string());
    }
    let pid = guard.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Every subscriber gets close 1001; answering it lets the server exit before the grace ends.
    let close = c.recv_close().expect("close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "server shutting down");
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = guard.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen.extend(logs.try_iter());
    assert!(status.expect(&format!("exited after SIGTERM: {seen:#?}")).success());
    seen.extend(logs.try_iter());
    assert!(
        seen.iter().any(|l| l.contains("synthetic feed")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains("shutting down")), "{seen:?}");
}
