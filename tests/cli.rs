//! The `tickfan` binary: help, configuration errors, and a run with the synthetic feed.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use std::time::Duration;

use common::process::{wait_exit, Guard, Running, BIN, PUBLIC_ONLY};
use common::Client;
use serde_json::json;

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

fn ws_client(addr: std::net::SocketAddr, path: &str) -> Client {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let (ws, _) =
        tungstenite::client::client(format!("ws://{addr}{path}").as_str(), stream).unwrap();
    Client { ws }
}

#[test]
fn synthetic_feed_flows_by_default_and_sigterm_closes_everyone_with_1001() {
    let mut run = Running::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--ingest",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--workers",
            "2",
        ],
        "publishers connect to",
    );
    let mut c = ws_client(run.addr("subscribe at ws://"), "/ws");
    let mut publisher = ws_client(run.addr("publishers connect to ws://"), "/publish");
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
    run.signal("-TERM");
    // Publisher and subscriber both get close 1001; answering lets the server exit before the
    // grace period (5 s) ends.
    for client in [&mut publisher, &mut c] {
        let close = client.recv_close().expect("close frame");
        assert_eq!(u16::from(close.code), 1001);
        assert_eq!(close.reason.as_str(), "server shutting down");
    }
    let status = run.wait_exit(Duration::from_secs(4));
    assert!(
        status.expect("exits within the grace period").success(),
        "{:#?}",
        run.seen
    );
    assert!(
        run.seen.iter().any(|l| l.contains("synthetic feed")),
        "{:#?}",
        run.seen
    );
    assert!(
        run.seen.iter().any(|l| l.contains("draining")),
        "{:#?}",
        run.seen
    );
}

#[test]
fn second_signal_exits_at_once() {
    let mut run = Running::start(
        &[
            &PUBLIC_ONLY[..],
            &["--feed", "none", "--set", "shutdown.grace_ms=60000"],
        ]
        .concat(),
        "subscribe at",
    );
    // A client that never reads never answers the close, so the drain would wait 60 s.
    let _silent = ws_client(run.addr("subscribe at ws://"), "/ws");
    run.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(run.guard.0.try_wait().unwrap().is_none(), "still draining");
    run.signal("-INT");
    let status = run
        .wait_exit(Duration::from_secs(5))
        .expect("exited at once");
    assert_eq!(status.code(), Some(128 + 2), "{:#?}", run.seen);
}

#[test]
fn token_subcommand_mints_a_token_the_server_accepts() {
    let out = Command::new(BIN)
        .args([
            "token",
            "--sub",
            "alice",
            "--ttl",
            "60",
            "--channel",
            "binance/*/trade",
        ])
        .args([
            "--set",
            "auth.jwt_secret=\"s3\"",
            "--set",
            "auth.jwt_audience=\"tickfan\"",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let auth = tickfan::config::AuthConfig {
        jwt_secret: "s3".into(),
        jwt_audience: "tickfan".into(),
        ..Default::default()
    };
    let id = tickfan::auth::Authenticator::from_config(&auth)
        .unwrap()
        .unwrap()
        .check(&token)
        .unwrap();
    assert_eq!(id.user, "alice");
    assert_eq!(id.channels.map(|c| c.len()), Some(1));
    // Without a secret: a clear error, exit 2.
    let out = Command::new(BIN)
        .args(["token", "--sub", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.jwt_secret"));
}

/// Listeners use SO_REUSEPORT (one per worker); a second instance on the same address must
/// still fail to start, not join the group and silently take a share of the connections.
#[test]
fn a_second_instance_on_the_same_address_refuses_to_start() {
    let first = Running::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--ingest",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--workers",
            "2",
            "--feed",
            "none",
        ],
        "publishers connect to",
    );
    let public = first.addr("subscribe at ws://").to_string();
    let ingest = first.addr("publishers connect to ws://").to_string();
    for (listen, ingest, which) in [
        (public.as_str(), "127.0.0.1:0", "public"),
        ("127.0.0.1:0", ingest.as_str(), "ingest"),
    ] {
        let mut second = Guard(
            Command::new(BIN)
                .args(["--listen", listen, "--ingest", ingest, "--admin", "off"])
                .args(["--feed", "none"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let status = wait_exit(&mut second, Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| !s.success()),
            "a second instance on the {which} address started"
        );
        let mut err = String::new();
        second
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            err.contains(&format!("cannot bind the {which} listener")) && err.contains("in use"),
            "{err}"
        );
    }
    // The first instance still serves.
    let mut c = ws_client(first.addr("subscribe at ws://"), "/ws");
    c.send(&json!({"type":"subscribe","id":1,"exchange":["x"]}));
    assert_eq!(c.recv()["type"], "subscribed");
}
