//! Encoding gateway-to-client messages as complete WebSocket text frames: data messages
//! (encoded once per stream message, shared by every subscriber) and replies.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::frame::FrameBuilder;
use super::ErrorCode;
use crate::routing::filter::{Filter, StreamKey};

/// The constant start of every data message of one stream, up to and including `"seq":`.
pub fn data_prefix(key: &StreamKey) -> Box<[u8]> {
    let mut out = Vec::with_capacity(64 + key.exchange.len() + key.symbol.len());
    out.extend_from_slice(br#"{"type":"data","exchange":"#);
    write_json_str(&mut out, &key.exchange);
    out.extend_from_slice(br#","symbol":"#);
    write_json_str(&mut out, &key.symbol);
    out.extend_from_slice(br#","dataType":"#);
    write_json_str(&mut out, &key.data_type);
    out.extend_from_slice(br#","seq":"#);
    out.into_boxed_slice()
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Encodes one data message as a frame: `prefix` from [`data_prefix`], then seq, ts and the
/// publisher's raw `data` bytes.
pub fn data_frame(prefix: &[u8], seq: u64, ts_ms: u64, raw_data: &str) -> Bytes {
    let mut b = FrameBuilder::with_capacity(prefix.len() + raw_data.len() + 40);
    let p = b.payload();
    p.extend_from_slice(prefix);
    p.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    p.extend_from_slice(b",\"ts\":");
    p.extend_from_slice(itoa::Buffer::new().format(ts_ms).as_bytes());
    p.extend_from_slice(b",\"data\":");
    p.extend_from_slice(raw_data.as_bytes());
    p.push(b'}');
    b.finish()
}

/// Serialises any reply as one text frame.
pub fn json_frame<T: Serialize>(value: &T) -> Bytes {
    let mut b = FrameBuilder::with_capacity(128);
    // Our reply types serialise infallibly (no maps with non-string keys, no failing impls).
    let _ = serde_json::to_writer(b.payload(), value);
    b.finish()
}

#[derive(Serialize)]
struct FilterReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    #[serde(rename = "filterId")]
    filter_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    symbols: Option<Vec<&'a str>>,
    #[serde(rename = "dataTypes", skip_serializing_if = "Option::is_none")]
    data_types: Option<Vec<&'a str>>,
    #[serde(rename = "throttleMs", skip_serializing_if = "Option::is_none")]
    throttle_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(rename = "notRecovered", skip_serializing_if = "Option::is_none")]
    not_recovered: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// The outcome of a `resume`: whether every listed stream was replayed, and why not for those
/// that were not (by stream key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Stream key (`exchange:symbol:dataType`) → reason it could not be recovered.
    pub not_recovered: std::collections::BTreeMap<String, String>,
}

/// `{"type":"subscribed",...}` with the normalised filter, the epoch, the throttle when set,
/// and the resume outcome when one was asked.
pub fn subscribed(
    id: Option<&RawValue>,
    filter_id: &str,
    filter: &Filter,
    throttle_ms: u32,
    epoch: &str,
    recovery: Option<&Recovery>,
) -> Bytes {
    json_frame(&FilterReply {
        kind: "subscribed",
        id,
        filter_id,
        exchange: Some(filter.exchange.names()),
        symbols: Some(filter.symbols.names()),
        data_types: Some(filter.data_types.names()),
        throttle_ms: (throttle_ms > 0).then_some(throttle_ms),
        epoch: Some(epoch),
        recovered: recovery.map(|r| r.not_recovered.is_empty()),
        not_recovered: recovery.map(|r| &r.not_recovered).filter(|m| !m.is_empty()),
    })
}

/// `{"type":"unsubscribed",...}`.
pub fn unsubscribed(id: Option<&RawValue>, filter_id: &str) -> Bytes {
    json_frame(&FilterReply {
        kind: "unsubscribed",
        id,
        filter_id,
        exchange: None,
        symbols: None,
        data_types: None,
        throttle_ms: None,
        epoch: None,
        recovered: None,
        not_recovered: None,
    })
}

/// The snapshot form of a data frame: the same message with `"snapshot":true` added.
pub fn snapshot_frame(data_frame: &[u8]) -> Option<Bytes> {
    let (_, start, end) = super::frame::split_unmasked(data_frame)?;
    let payload = &data_frame[start..end];
    if !payload.ends_with(b"}") {
        return None;
    }
    let mut b = super::frame::FrameBuilder::with_capacity(payload.len() + 16);
    b.payload().extend_from_slice(&payload[..payload.len() - 1]);
    b.payload().extend_from_slice(b",\"snapshot\":true}");
    Some(b.finish())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DroppedNotice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    exchange: &'a str,
    symbol: &'a str,
    data_type: &'a str,
    count: u64,
    reason: &'a str,
}

/// `{"type":"dropped",...}`: `count` messages of this stream were not delivered, and why
/// (`slow_consumer`, `worker_overloaded`), so the client can explain its seq gap.
pub fn dropped(key: &StreamKey, count: u64, reason: &str) -> Bytes {
    json_frame(&DroppedNotice {
        kind: "dropped",
        exchange: &key.exchange,
        symbol: &key.symbol,
        data_type: &key.data_type,
        count,
        reason,
    })
}

#[derive(Serialize)]
struct TimeReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    ts: u64,
}

/// `{"type":"pong","id":..,"ts":..}`.
pub fn pong(id: Option<&RawValue>, ts_ms: u64) -> Bytes {
    json_frame(&TimeReply {
        kind: "pong",
        id,
        ts: ts_ms,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Refreshed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    expires_at: u64,
}

/// `{"type":"refreshed","id":..,"expiresAt":ms}`: the new token is in force.
pub fn refreshed(id: Option<&RawValue>, expires_at_ms: u64) -> Bytes {
    json_frame(&Refreshed {
        kind: "refreshed",
        id,
        expires_at: expires_at_ms,
    })
}

/// `{"type":"heartbeat_ack","ts":..}`.
pub fn heartbeat_ack(ts_ms: u64) -> Bytes {
    json_frame(&TimeReply {
        kind: "heartbeat_ack",
        id: None,
        ts: ts_ms,
    })
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
}

/// `{"type":"error",...}`; `index` is the position in a publisher batch.
pub fn error(id: Option<&RawValue>, code: ErrorCode, message: &str, index: Option<usize>) -> Bytes {
    json_frame(&ErrorReply {
        kind: "error",
        id,
        code: code.as_str(),
        message,
        index,
    })
}

/// One connection's counters, the body of a `stats` reply.
#[derive(Debug, Serialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ConnStatsReply {
    /// Connection id (as in the logs).
    pub connection_id: u64,
    /// Worker that owns the connection.
    pub worker: usize,
    /// When the connection opened, ms since the epoch.
    pub connected_at: u64,
    /// Messages received from the client.
    pub messages_received: u64,
    /// Bytes received from the client (WebSocket framing included).
    pub bytes_received: u64,
    /// Data messages routed to this connection.
    pub data_messages_queued: u64,
    /// Frames (data and replies) written to the socket in full.
    pub frames_sent: u64,
    /// Bytes written to the socket.
    pub bytes_sent: u64,
    /// Bytes queued and not yet written.
    pub pending_bytes: u64,
    /// Data messages written in full.
    pub data_messages_written: u64,
    /// Data messages replaced by a newer one of their stream (conflate policy).
    pub conflated: u64,
    /// Data messages dropped while over the output limit (drop policy).
    pub dropped_slow_consumer: u64,
    /// Data messages dropped unwritten at a slow-consumer close.
    pub dropped_on_close: u64,
    /// Data messages queued, not yet written. Invariant: `dataMessagesQueued =
    /// dataMessagesWritten + conflated + droppedSlowConsumer + droppedOnClose +
    /// pendingDataMessages`.
    pub pending_data_messages: u64,
    /// Filters held.
    pub filters: usize,
    /// Streams currently matched by the filters.
    pub streams: usize,
    /// Error replies sent.
    pub errors: u64,
}

#[derive(Serialize)]
struct StatsReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    #[serde(flatten)]
    stats: &'a ConnStatsReply,
}

/// `{"type":"stats","id":..,...counters}`.
pub fn stats(id: Option<&RawValue>, stats: &ConnStatsReply) -> Bytes {
    json_frame(&StatsReply {
        kind: "stats",
        id,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &Bytes) -> serde_json::Value {
        let hlen = crate::protocol::frame::header_len(frame.len() - 2);
        serde_json::from_slice(&frame[hlen..]).unwrap()
    }

    #[test]
    fn data_frame_is_valid_json_with_raw_data() {
        let key = StreamKey::new("bin\"ance", "BTCUSDT", "trade");
        let f = data_frame(
            &data_prefix(&key),
            42,
            1_732_300_000_123,
            r#"{"price":"1.0"}"#,
        );
        let v = payload(&f);
        assert_eq!(v["exchange"], "bin\"ance");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["ts"], 1_732_300_000_123u64);
        assert_eq!(v["data"]["price"], "1.0");
        assert!(std::str::from_utf8(&f[2..])
            .unwrap()
            .ends_with(r#""data":{"price":"1.0"}}"#));
    }

    #[test]
    fn snapshot_frames_mark_the_data_message() {
        let key = StreamKey::new("x", "A", "ticker");
        for data in [
            r#"{"p":1}"#.to_string(),
            format!(r#"{{"pad":"{}"}}"#, "y".repeat(300)),
        ] {
            let f = data_frame(&data_prefix(&key), 7, 1, &data);
            let snap = snapshot_frame(&f).unwrap();
            let v = payload(&snap);
            assert_eq!(
                (v["seq"].as_u64(), v["snapshot"].as_bool()),
                (Some(7), Some(true))
            );
        }
    }

    #[test]
    fn error_reply_shape() {
        let id = RawValue::from_string("1".into()).unwrap();
        let v = payload(&error(
            Some(&id),
            ErrorCode::NotFound,
            "no such filter",
            None,
        ));
        assert_eq!(
            v,
            serde_json::json!({"type":"error","id":1,"code":"NOT_FOUND","message":"no such filter"})
        );
    }
}
