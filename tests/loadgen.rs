//! The load tool against a real server and against the baseline: small scenarios, no loss, and
//! the counters it reports add up.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{signal, wait_exit, Guard, BIN};
use tickfan::loadgen::{run, Scenario, Target};

fn small(name: &str) -> Scenario {
    let mut s = Scenario::preset(name).unwrap();
    s.subscribers = 40;
    s.rate = 200;
    s.duration = Duration::from_millis(1500);
    s
}

#[test]
fn scenario_against_tickfan_delivers_everything() {
    let (server, target) = common::start_for_load(Some(std::process::id()));
    let report = run(&small("light"), &target, false).unwrap();
    assert_eq!(report.connected, 40);
    assert!(report.published >= 250, "{report:?}");
    assert_eq!(report.expected, report.published * 40 * 10 / 100);
    assert_eq!(
        (
            report.delivered,
            report.lost,
            report.gaps,
            report.duplicates
        ),
        (report.expected, 0, 0, 0)
    );
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.max >= report.latency_ms.p99);
    assert!(report.server_rss_bytes > 0);
    // The server saw the same deliveries.
    assert_eq!(server.stats().delivery.written, report.delivered);
    let table = tickfan::loadgen::table(&report);
    assert!(
        table.contains("lost, gaps, duplicates       0, 0, 0"),
        "{table}"
    );
}

#[test]
fn connect_scenario_counts_handshakes() {
    let (server, target) = common::start_for_load(None);
    let mut s = Scenario::preset("connect").unwrap();
    s.subscribers = 300;
    let report = run(&s, &target, false).unwrap();
    assert_eq!(report.connected, 300);
    assert!(report.handshakes_per_sec > 0.0 && report.handshake_ms.p99 > 0.0);
    // The run held them, then closed them all.
    assert_eq!(server.stats().total_connections, 300);
    common::wait_until("closed", || server.stats().active_connections == 0);
}

#[test]
fn baseline_server_serves_the_same_scenario() {
    let mut child = Guard(
        Command::new(BIN)
            .args([
                "bench-baseline",
                "--public",
                "127.0.0.1:0",
                "--ingest",
                "127.0.0.1:0",
            ])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "baseline: public 127.0.0.1:P ingest 127.0.0.1:Q"
    let parts: Vec<&str> = line.split_whitespace().collect();
    let target = Target {
        public: parts[2].parse().unwrap(),
        ingest: parts[4].parse().unwrap(),
        server_pid: Some(child.0.id()),
    };
    // Stopped and continued while it waits in `epoll_wait`, which then fails with EINTR: it
    // goes on serving (it used to exit with "Interrupted system call").
    stop_and_continue(&child);
    let report = run(&small("heavy"), &target, false).unwrap();
    assert_eq!(report.connected, 40);
    assert_eq!(
        (report.lost, report.gaps, report.duplicates),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.delivered, report.published * 40);
}

/// `kill -STOP`, then `kill -CONT`, with a pause on each side so the process is asleep in its
/// poll when it stops.
fn stop_and_continue(child: &Guard) {
    std::thread::sleep(Duration::from_millis(200));
    signal(child, "-STOP");
    std::thread::sleep(Duration::from_millis(200));
    signal(child, "-CONT");
}

#[test]
fn the_load_tool_survives_being_stopped_and_continued() {
    let (server, _) = common::start_for_load(None);
    let mut tool = Guard(
        Command::new(BIN)
            .args([
                "bench",
                "light",
                "--subscribers",
                "20",
                "--duration",
                "2",
                "--json",
            ])
            .arg("--to")
            .arg(server.public_addr().unwrap().to_string())
            .arg("--publish-to")
            .arg(server.ingest_addr().unwrap().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Mid-run: the subscribers are connected and messages are flowing.
    std::thread::sleep(Duration::from_millis(500));
    stop_and_continue(&tool);
    let status = wait_exit(&mut tool, Duration::from_secs(30)).expect("the tool ends");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut tool.0.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{status}: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["connected"], 20, "{report}");
    assert!(report["published"].as_u64().unwrap() > 0, "{report}");
}
