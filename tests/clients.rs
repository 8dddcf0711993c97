//! The JavaScript client in Node.js and the status page in headless Chromium, against the real
//! binary. Node.js, Chromium (Debian's package) and playwright-core (npm, pinned in
//! tests/js/package-lock.json) are installed by the project's scripts when missing.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::external::{ensure_packages, logged_addr, Nginx, Node, Redis};
use common::process::{wait_exit, Guard, Running, BIN};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `node`, with the flag Node.js 20 needs for the global WebSocket.
fn node() -> Command {
    ensure_packages(&[("node", "nodejs")]);
    let out = Command::new("node")
        .arg("--version")
        .output()
        .expect("node");
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "Node.js 20 or newer is needed, found {version}"
    );
    let mut cmd = Command::new("node");
    if major < 22 {
        cmd.arg("--experimental-websocket");
    }
    cmd
}

/// The longest a Node.js or npm run may take (npm ci downloads Chromium's driver once).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `cmd` to its end and returns its output; fails when it fails. After [`RUN_TIMEOUT`]
/// its whole process group is killed and the test fails with what it printed: a Node.js test
/// that failed with a connection still open would otherwise keep its process, and CI, waiting.
fn run(mut cmd: Command, what: &str) -> String {
    let mut child = Guard(
        cmd.process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}")),
    );
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = collect(Box::new(child.0.stdout.take().expect("stdout")));
    let stderr = collect(Box::new(child.0.stderr.take().expect("stderr")));
    let status = wait_exit(&mut child, RUN_TIMEOUT);
    if status.is_none() {
        // The whole group: `node --test` runs each test file in a child of its own.
        let group = format!("-{}", child.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.0.wait();
    }
    let text = format!(
        "{}{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    match status {
        Some(status) => assert!(status.success(), "{what} failed:\n{text}"),
        None => panic!("{what} did not end within {RUN_TIMEOUT:?}:\n{text}"),
    }
    text
}

#[test]
fn javascript_client_in_node_reconnects_resumes_and_never_doubles_its_connection() {
    let mut cmd = node();
    cmd.arg("--test")
        .arg(root().join("tests/js/client.test.js"))
        .env("TICKFAN_BIN", BIN);
    let out = run(cmd, "node --test tests/js/client.test.js");
    assert!(
        out.contains("# pass 5") && out.contains("# fail 0"),
        "{out}"
    );
}

fn ensure_playwright(dir: &Path) {
    if dir.join("node_modules/playwright-core").exists() {
        return;
    }
    ensure_packages(&[("npm", "npm")]);
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    run(cmd, "npm ci in tests/js");
}

#[test]
fn status_page_in_chromium_shows_connections_and_ticking_prices_without_errors() {
    ensure_packages(&[("chromium", "chromium")]);
    let js = root().join("tests/js");
    ensure_playwright(&js);
    let server = Running::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--ingest",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--feed",
            "synthetic",
            "--set",
            "feed.rate_per_sec=300",
        ],
        "admin on http://",
    );
    let admin = logged_addr(&server, "admin on http://");
    let artifacts = root().join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let mut cmd = node();
    cmd.arg(js.join("status-page.test.js"))
        .arg(format!("http://{admin}/"))
        .arg(&shot);
    let out = run(cmd, "the status page test");
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap();
    assert_ne!(report["connections"], "0", "{report}");
    assert_eq!(report["ticked"], true, "prices tick: {report}");
    let png = std::fs::read(&shot).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    println!("screenshot: {}", shot.display());
}

#[test]
fn javascript_client_fails_over_through_nginx_to_another_node_without_a_gap() {
    ensure_packages(&[("redis-server", "redis-server"), ("nginx", "nginx")]);
    let redis = Redis::start();
    let a = Node::start(&redis.url(), &[]);
    let b = Node::start(&redis.url(), &[]);
    let nginx = Nginx::start(&[a.public, b.public]);
    let setup = serde_json::json!({
        "ws": format!("ws://{}/ws", nginx.addr()),
        "nodes": [a.clone_info(), b.clone_info()],
    });
    let mut cmd = node();
    cmd.arg("--test")
        .arg(root().join("tests/js/failover.test.js"))
        .env("FAILOVER_JSON", setup.to_string());
    let out = run(cmd, "node --test tests/js/failover.test.js");
    assert!(
        out.contains("# pass 1") && out.contains("# fail 0"),
        "{out}"
    );
}
