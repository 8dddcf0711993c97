//! `tickfan sub URL`: a terminal subscriber. Prints data messages readably (or as JSON lines),
//! reconnects with exponential backoff and jitter, resumes from the last seq it saw, and reports
//! gaps, drops and failed resumes on stderr.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use super::ToolError;
use crate::backoff::Backoff;
use crate::net::client::{self, ClientSocket};

/// How long a read blocks before the loop checks its heartbeat.
const READ_SLICE_MS: u64 = 500;

/// What to subscribe to and how to print.
#[derive(Debug, Clone)]
pub struct SubOptions {
    /// `ws://host:port/ws` (with `?token=` if the gateway wants one).
    pub url: String,
    /// Exchanges (empty: all).
    pub exchange: Vec<String>,
    /// Symbols (empty: all).
    pub symbols: Vec<String>,
    /// Data types (empty: all).
    pub data_types: Vec<String>,
    /// Ask for the newest message of each stream first.
    pub snapshot: bool,
    /// Print each message as the gateway sent it, one JSON object per line.
    pub json: bool,
    /// Stop after this many data messages.
    pub count: Option<u64>,
    /// First reconnect delay (doubling, +/-30% jitter).
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay.
    pub reconnect_max_ms: u64,
    /// A JSON ping after this long without a message; twice this without one ends the
    /// connection.
    pub heartbeat_ms: u64,
}

impl Default for SubOptions {
    fn default() -> Self {
        SubOptions {
            url: String::new(),
            exchange: Vec::new(),
            symbols: Vec::new(),
            data_types: Vec::new(),
            snapshot: false,
            json: false,
            count: None,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 30_000,
            heartbeat_ms: 15_000,
        }
    }
}

/// What a run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SubReport {
    /// Data messages printed.
    pub messages: u64,
    /// Seq gaps seen (including those the gateway announced with `dropped`).
    pub gaps: u64,
    /// Messages missed in those gaps.
    pub missed: u64,
    /// Connections after the first.
    pub reconnects: u64,
    /// Messages with a seq already seen (skipped).
    pub duplicates: u64,
}

/// How one connection ended.
enum End {
    /// `count` reached.
    Done,
    /// Lost; try again.
    Lost(String),
}

#[derive(Default)]
struct State {
    epoch: Option<String>,
    last: HashMap<String, u64>,
    report: SubReport,
}

/// Runs until `count` messages were printed, or forever. Data goes to `out`, everything else
/// (connects, gaps, errors) to `log`.
pub fn run(
    opts: &SubOptions,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<SubReport, ToolError> {
    let mut state = State::default();
    let mut backoff = Backoff::new(
        opts.reconnect_min_ms,
        opts.reconnect_max_ms,
        crate::backoff::seed(),
    );
    let mut connects = 0u64;
    loop {
        let end = match client::connect(
            &opts.url,
            Duration::from_secs(10),
            Duration::from_millis(READ_SLICE_MS),
        ) {
            Ok(mut ws) => {
                connects += 1;
                if connects > 1 {
                    state.report.reconnects += 1;
                }
                let _ = writeln!(log, "connected to {}", opts.url);
                let end = session(opts, &mut ws, &mut state, out, log)?;
                if matches!(end, End::Done) {
                    let _ = ws.close(None);
                    let _ = ws.flush();
                }
                end
            }
            Err(e) => End::Lost(format!("cannot connect: {e}")),
        };
        match end {
            End::Done => return Ok(state.report),
            End::Lost(why) => {
                let wait = backoff.next_delay();
                let _ = writeln!(log, "disconnected: {why}; reconnecting in {wait:?}");
                std::thread::sleep(wait);
            }
        }
    }
}

fn subscribe_message(opts: &SubOptions, state: &State) -> Value {
    let mut m = json!({"type": "subscribe", "id": "sub"});
    for (field, list) in [
        ("exchange", &opts.exchange),
        ("symbols", &opts.symbols),
        ("dataTypes", &opts.data_types),
    ] {
        if !list.is_empty() {
            m[field] = json!(list);
        }
    }
    if opts.snapshot {
        m["snapshot"] = json!(true);
    }
    if let Some(epoch) = &state.epoch {
        if !state.last.is_empty() {
            m["resume"] = json!({"epoch": epoch, "streams": state.last});
        }
    }
    m
}

fn session(
    opts: &SubOptions,
    ws: &mut ClientSocket,
    state: &mut State,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<End, ToolError> {
    let sub = subscribe_message(opts, state);
    if let Err(e) = ws.send(Message::text(sub.to_string())) {
        return Ok(End::Lost(format!("subscribe: {e}")));
    }
    let heartbeat = Duration::from_millis(opts.heartbeat_ms.max(100));
    let mut last_rx = Instant::now();
    let mut pinged = false;
    loop {
        if last_rx.elapsed() >= heartbeat * 2 {
            return Ok(End::Lost(
                "heartbeat timeout: the gateway went silent".into(),
            ));
        }
        if !pinged && last_rx.elapsed() >= heartbeat {
            pinged = true;
            if let Err(e) = ws.send(Message::text(r#"{"type":"ping","id":"hb"}"#)) {
                return Ok(End::Lost(format!("ping: {e}")));
            }
        }
        let text = match ws.read() {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                if code == 1008 {
                    return Err(ToolError::Refused(format!(
                        "the gateway closed with 1008 ({reason}): check the token"
                    )));
                }
                return Ok(End::Lost(format!("closed by the gateway: {code} {reason}")));
            }
            Ok(_) => {
                last_rx = Instant::now();
                pinged = false;
                continue;
            }
            Err(e) if client::is_timeout(&e) => continue,
            Err(e) => return Ok(End::Lost(e.to_string())),
        };
        last_rx = Instant::now();
        pinged = false;
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            let _ = writeln!(log, "the gateway sent something that is not JSON");
            continue;
        };
        match v["type"].as_str() {
            Some("data") if on_data(opts, state, &v, text.as_str(), out, log)? => {
                return Ok(End::Done);
            }
            Some("subscribed") => on_subscribed(state, &v, log),
            Some("dropped") => {
                let n = v["count"].as_u64().unwrap_or(0);
                state.report.gaps += 1;
                state.report.missed += n;
                let _ = writeln!(
                    log,
                    "gap: the gateway dropped {n} message(s) of {} ({})",
                    stream_key(&v),
                    v["reason"].as_str().unwrap_or("?")
                );
            }
            Some("error") => {
                let _ = writeln!(
                    log,
                    "error {}: {}",
                    v["code"].as_str().unwrap_or("?"),
                    v["message"].as_str().unwrap_or("")
                );
                if v["id"] == "sub" {
                    return Err(ToolError::Refused(format!(
                        "subscribe refused: {}",
                        v["message"].as_str().unwrap_or("")
                    )));
                }
            }
            _ => {}
        }
    }
}

fn stream_key(v: &Value) -> String {
    format!(
        "{}:{}:{}",
        v["exchange"].as_str().unwrap_or(""),
        v["symbol"].as_str().unwrap_or(""),
        v["dataType"].as_str().unwrap_or("")
    )
}

fn on_subscribed(state: &mut State, v: &Value, log: &mut dyn Write) {
    if let Some(epoch) = v["epoch"].as_str() {
        if state.epoch.as_deref().is_some_and(|e| e != epoch) {
            let _ = writeln!(
                log,
                "the gateway's epoch changed ({} -> {epoch}): every stream starts over",
                state.epoch.as_deref().unwrap_or("")
            );
            state.last.clear();
        }
        state.epoch = Some(epoch.to_string());
    }
    if v["recovered"] == true {
        let _ = writeln!(log, "resumed {} stream(s) without a gap", state.last.len());
    }
    if let Some(failed) = v["notRecovered"].as_object() {
        for (key, why) in failed {
            state.report.gaps += 1;
            state.last.remove(key);
            let _ = writeln!(
                log,
                "gap: could not resume {key}: {}",
                why.as_str().unwrap_or("?")
            );
        }
    }
}

/// Checks order, prints; returns whether `count` is reached.
fn on_data(
    opts: &SubOptions,
    state: &mut State,
    v: &Value,
    text: &str,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<bool, ToolError> {
    let key = stream_key(v);
    let seq = v["seq"].as_u64().unwrap_or(0);
    let snapshot = v["snapshot"] == true;
    if let Some(&last) = state.last.get(&key) {
        if !snapshot && seq <= last {
            state.report.duplicates += 1;
            return Ok(false);
        }
        if !snapshot && seq > last + 1 {
            let missed = seq - last - 1;
            state.report.gaps += 1;
            state.report.missed += missed;
            let _ = writeln!(
                log,
                "gap: {key} jumped from seq {last} to {seq} ({missed} missed)"
            );
        }
    }
    state.last.insert(key, seq);
    state.report.messages += 1;
    let printed = if opts.json {
        writeln!(out, "{text}")
    } else {
        writeln!(
            out,
            "{} {:<10} {:<12} {:<8} #{:<8} {}{}",
            clock(v["ts"].as_u64().unwrap_or(0)),
            v["exchange"].as_str().unwrap_or(""),
            v["symbol"].as_str().unwrap_or(""),
            v["dataType"].as_str().unwrap_or(""),
            seq,
            v["data"],
            if snapshot { "  (snapshot)" } else { "" }
        )
    };
    // A closed stdout (`| head`) ends the run.
    printed.map_err(|e| ToolError::Output(e.to_string()))?;
    Ok(opts.count.is_some_and(|n| state.report.messages >= n))
}

/// `HH:MM:SS.mmm` (UTC) of a time in ms since the epoch.
pub fn clock(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1_000 % 60,
        day_ms % 1_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_subscribe_message() {
        assert_eq!(clock(1_732_300_000_123), "18:26:40.123");
        let opts = SubOptions {
            exchange: vec!["binance".into()],
            snapshot: true,
            ..SubOptions::default()
        };
        let mut state = State::default();
        let m = subscribe_message(&opts, &state);
        assert_eq!(
            m,
            json!({"type":"subscribe","id":"sub","exchange":["binance"],"snapshot":true})
        );
        state.epoch = Some("e".into());
        state.last.insert("binance:BTCUSDT:trade".into(), 7);
        let m = subscribe_message(&opts, &state);
        assert_eq!(
            m["resume"],
            json!({"epoch":"e","streams":{"binance:BTCUSDT:trade":7}})
        );
    }
}
