//! Running the `tickfan` binary in tests: its log lines, its address, signals, exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tickfan");

/// Flags for a run with only the public listener, on a free port.
pub const PUBLIC_ONLY: [&str; 6] = [
    "--listen",
    "127.0.0.1:0",
    "--ingest",
    "off",
    "--admin",
    "off",
];

/// Kills the child by pid when the test ends, whatever happens.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `sig` (as `kill` spells it: `-TERM`) to the child.
pub fn signal(child: &Guard, sig: &str) {
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits up to `limit` for the child's exit status.
pub fn wait_exit(child: &mut Guard, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        if let Some(s) = child.0.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A running binary: its stderr lines so far, and the rest as they come.
pub struct Running {
    pub guard: Guard,
    pub seen: Vec<String>,
    pub logs: mpsc::Receiver<String>,
}

impl Running {
    /// Starts the binary and waits until it has logged a line containing `ready`.
    pub fn start(args: &[&str], ready: &str) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut r = Running {
            guard: Guard(child),
            seen: Vec::new(),
            logs,
        };
        while !r.seen.iter().any(|l| l.contains(ready)) {
            let line = r
                .logs
                .recv_timeout(super::TIMEOUT)
                .expect("the server logs its start");
            r.seen.push(line);
        }
        r
    }

    /// The address logged after `marker` (e.g. "subscribe at ws://").
    pub fn addr(&self, marker: &str) -> std::net::SocketAddr {
        let line = self
            .seen
            .iter()
            .find(|l| l.contains(marker))
            .expect("address logged");
        let rest = line.split(marker).nth(1).unwrap();
        rest.split('/').next().unwrap().parse().unwrap()
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.guard, sig);
    }

    /// Waits up to `limit` for the exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let status = wait_exit(&mut self.guard, limit);
        self.seen.extend(self.logs.try_iter());
        status
    }
}

impl Running {
    /// Waits until a log line containing `text` arrives (stderr), returning it.
    pub fn wait_for_line(&mut self, text: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
            return l.clone();
        }
        loop {
            let line = self
                .logs
                .recv_timeout(super::TIMEOUT)
                .unwrap_or_else(|_| panic!("no log line with {text:?}; saw {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }
}
