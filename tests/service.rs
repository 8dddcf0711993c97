//! The binary as a systemd service: SIGUSR1 stats dump into a log file, SIGHUP reload (live
//! keys applied, broken config rejected, log file reopened after rotation), and sd_notify
//! datagrams on path and abstract NOTIFY_SOCKETs.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{signal, Guard, BIN, PUBLIC_ONLY};
use common::{http, status};

/// A scratch directory removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tickfan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until the file contains `text`; returns the line that does.
fn wait_in_file(path: &Path, text: &str) -> String {
    let t0 = Instant::now();
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = content.lines().find(|l| l.contains(text)) {
            return l.to_string();
        }
        assert!(
            t0.elapsed() < common::TIMEOUT,
            "{text:?} never appeared in {path:?}:\n{content}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn addr_after(line: &str, marker: &str) -> std::net::SocketAddr {
    let rest = line.split(marker).nth(1).unwrap();
    rest.split(['/', ' ']).next().unwrap().parse().unwrap()
}

fn exited(child: &mut Guard) -> std::process::ExitStatus {
    common::process::wait_exit(child, common::TIMEOUT).expect("exited")
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Guard {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Guard(cmd.spawn().unwrap())
}

/// Starts the binary on a public port only (plus `extra` flags), logging to a file in a scratch
/// directory, and waits until it serves. Returns the directory (removed on drop), the log's
/// path and the process.
fn start_logging(tag: &str, extra: &[&str]) -> (TempDir, PathBuf, Guard) {
    let dir = TempDir::new(tag);
    let log = dir.0.join("tickfan.log");
    let mut args = PUBLIC_ONLY.to_vec();
    args.extend_from_slice(extra);
    args.extend(["--log-file", log.to_str().unwrap()]);
    let child = spawn(&args, &[]);
    wait_in_file(&log, "subscribe at");
    (dir, log, child)
}

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
ingest = "off"
admin = "127.0.0.1:0"
workers = 1
[log]
level = "info"
"#;

#[test]
fn sigusr1_dumps_stats_into_the_log_file() {
    let (_dir, log, mut child) = start_logging("usr1", &[]);
    signal(&child, "-USR1");
    wait_in_file(&log, "stats dump: status Healthy");
    for part in [
        "  connections:",
        "  ingest:",
        "  delivery:",
        "  latency ms:",
        "  worker 0:",
    ] {
        wait_in_file(&log, part);
    }
    // The synthetic feed kept flowing: the dump did not stop anything.
    signal(&child, "-TERM");
    assert!(exited(&mut child).success());
}

/// The main thread's voluntary context switches (each a wake from sleep).
fn main_thread_wakes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

/// Without systemd to notify, the supervisor sleeps until a signal comes: an idle gateway's
/// main thread does not wake on a timer (it used to, 20 times a second), and a signal is
/// still handled at once.
#[test]
fn idle_supervisor_sleeps_until_a_signal() {
    let (_dir, log, mut child) = start_logging("idle", &["--feed", "none"]);
    let pid = child.0.id();
    let before = main_thread_wakes(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let wakes = main_thread_wakes(pid) - before;
    assert!(wakes <= 2, "the main thread woke {wakes} times in 1 s");
    let t0 = Instant::now();
    signal(&child, "-USR1");
    wait_in_file(&log, "stats dump: status");
    assert!(t0.elapsed() < Duration::from_secs(2));
    signal(&child, "-TERM");
    assert!(exited(&mut child).success());
}

#[test]
fn sighup_reloads_live_keys_rejects_broken_config_and_reopens_the_log() {
    let dir = TempDir::new("hup");
    let (config, log) = (dir.0.join("tickfan.toml"), dir.0.join("tickfan.log"));
    std::fs::write(&config, CONFIG).unwrap();
    let mut child = spawn(
        &[
            "--config",
            config.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ],
        &[],
    );
    let public = addr_after(
        &wait_in_file(&log, "subscribe at ws://"),
        "subscribe at ws://",
    );
    let admin = addr_after(&wait_in_file(&log, "admin on http://"), "admin on http://");
    // At info, a new connection logs nothing.
    http(public, "GET /health HTTP/1.1\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("accepted from"));

    std::fs::write(
        &config,
        CONFIG
            .replace("level = \"info\"", "level = \"debug\"")
            .replace("workers = 1", "workers = 3"),
    )
    .unwrap();
    signal(&child, "-HUP");
    wait_in_file(&log, r#"reload: log.level: "info" -> "debug""#);
    wait_in_file(&log, "reload: server.workers: 1 -> 3 needs a restart");
    http(public, "GET /health HTTP/1.1\r\n\r\n");
    wait_in_file(&log, "accepted from");

    // logrotate: the file is moved away, SIGHUP makes tickfan write to a new one.
    let rotated = dir.0.join("tickfan.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    std::fs::write(&config, "[server\nbroken").unwrap();
    signal(&child, "-HUP");
    wait_in_file(&log, "reload failed, keeping the old configuration");
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("reload: log.level"));
    // Still serving, still at debug.
    assert_eq!(status(&http(admin, "GET /health HTTP/1.1\r\n\r\n")), 200);
    http(public, "GET /health HTTP/1.1\r\n\r\n");
    wait_in_file(&log, "accepted from");
    signal(&child, "-TERM");
    assert!(exited(&mut child).success());
}

/// Receives datagrams until one contains `text`.
fn recv_until(sock: &UnixDatagram, text: &str) -> String {
    let mut buf = [0u8; 512];
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < common::TIMEOUT, "no {text:?} datagram");
        if let Ok(n) = sock.recv(&mut buf) {
            let s = String::from_utf8_lossy(&buf[..n]).into_owned();
            if s.contains(text) {
                return s;
            }
        }
    }
}

fn notify_scenario(sock: &UnixDatagram, notify_socket: &str) {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = spawn(
        &[&PUBLIC_ONLY[..], &["--feed", "none"]].concat(),
        &[
            ("NOTIFY_SOCKET", notify_socket),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let ready = recv_until(sock, "READY=1");
    assert!(ready.contains("STATUS="), "{ready}");
    let status_line = recv_until(sock, "STATUS=");
    assert!(
        status_line.contains("connections") && status_line.contains("msg/s"),
        "{status_line}"
    );
    recv_until(sock, "WATCHDOG=1");
    signal(&child, "-TERM");
    recv_until(sock, "STOPPING=1");
    assert!(exited(&mut child).success());
}

#[test]
fn sd_notify_on_a_path_socket() {
    let dir = TempDir::new("notify");
    let path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    notify_scenario(&sock, path.to_str().unwrap());
}

#[test]
fn sd_notify_on_an_abstract_socket() {
    let name = format!("tickfan-notify-test-{}", std::process::id());
    let sock =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    notify_scenario(&sock, &format!("@{name}"));
}
