//! `tickfan pub URL`: publishes JSON lines from stdin (one message or an array of messages per
//! line) and reports the gateway's errors per line. Each line is followed by a WebSocket ping
//! carrying its line number; the gateway answers a connection's frames in order, so an error
//! that arrives after the pong of line N-1 belongs to line N.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;

use super::ToolError;
use crate::net::client::{self, ClientSocket};

/// Lines sent between two looks at the replies.
const DRAIN_EVERY_LINES: u64 = 64;
/// How long to wait for the last answers after the input ends.
const FINAL_WAIT: Duration = Duration::from_secs(10);

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PubReport {
    /// Lines sent (empty lines and `#` comments are skipped).
    pub lines: u64,
    /// Error replies.
    pub errors: u64,
    /// Lines with at least one error.
    pub lines_with_errors: u64,
    /// Whether every line was answered (its pong arrived) before the end.
    pub confirmed: bool,
}

struct Replies {
    /// Line numbers sent and not yet answered (their pong has not arrived), oldest first.
    pending: std::collections::VecDeque<u64>,
    /// The last line whose pong arrived.
    answered: u64,
    /// The last line that had an error (to count lines with errors once).
    last_error_line: u64,
    report: PubReport,
}

/// Publishes every line of `input`; errors go to `log` as `line N: CODE message`.
pub fn run(
    url: &str,
    input: &mut dyn BufRead,
    log: &mut dyn Write,
) -> Result<PubReport, ToolError> {
    let mut ws = client::connect(url, Duration::from_secs(10), Duration::from_millis(1))
        .map_err(ToolError::Connect)?;
    let mut replies = Replies {
        pending: std::collections::VecDeque::new(),
        answered: 0,
        last_error_line: 0,
        report: PubReport::default(),
    };
    let mut line_no = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = input
            .read_line(&mut line)
            .map_err(|e| ToolError::Input(e.to_string()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        ws.send(Message::text(text.to_string()))
            .and_then(|_| ws.send(Message::Ping(line_no.to_string().into_bytes().into())))
            .map_err(|e| ToolError::Connect(format!("line {line_no}: {e}")))?;
        replies.report.lines += 1;
        replies.pending.push_back(line_no);
        if replies.report.lines % DRAIN_EVERY_LINES == 0 {
            drain(&mut ws, &mut replies, log)?;
        }
    }
    let deadline = Instant::now() + FINAL_WAIT;
    client::set_read_timeout(&ws, Duration::from_millis(100)).map_err(ToolError::Connect)?;
    while !replies.pending.is_empty() && Instant::now() < deadline {
        drain(&mut ws, &mut replies, log)?;
    }
    replies.report.confirmed = replies.pending.is_empty();
    let _ = ws.close(None);
    let _ = ws.flush();
    Ok(replies.report)
}

/// Reads what has arrived, until a read times out.
fn drain(ws: &mut ClientSocket, r: &mut Replies, log: &mut dyn Write) -> Result<(), ToolError> {
    loop {
        match ws.read() {
            Ok(Message::Pong(p)) => {
                if let Some(n) = std::str::from_utf8(&p).ok().and_then(|s| s.parse().ok()) {
                    r.answered = n;
                    while r.pending.front().is_some_and(|&l| l <= n) {
                        r.pending.pop_front();
                    }
                }
            }
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if v["type"] != "error" {
                    continue;
                }
                // The oldest line not yet answered is the one being processed.
                let line = r.pending.front().copied().unwrap_or(r.answered + 1);
                r.report.errors += 1;
                if r.last_error_line != line {
                    r.last_error_line = line;
                    r.report.lines_with_errors += 1;
                }
                let element = v["index"]
                    .as_u64()
                    .map(|i| format!(" (element {i})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    log,
                    "line {line}: {} {}{element}",
                    v["code"].as_str().unwrap_or("?"),
                    v["message"].as_str().unwrap_or("")
                );
            }
            Ok(Message::Close(frame)) => {
                let why = frame
                    .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                    .unwrap_or_default();
                return Err(ToolError::Refused(format!(
                    "the gateway closed the connection after line {}: {why}",
                    r.answered
                )));
            }
            Ok(_) => {}
            Err(e) if client::is_timeout(&e) => return Ok(()),
            Err(e) => return Err(ToolError::Connect(e.to_string())),
        }
    }
}
