//! The bus's message format: a publisher message with the `epoch` and `seq` assigned in Redis
//! put in front, `{"epoch":"…","seq":N,"exchange":…,"symbol":…,"dataType":…,"ts":…,"data":…}`,
//! on the channel `<prefix><exchange>:<symbol>:<dataType>`; and the Lua script that assigns them.

use std::borrow::Cow;

use serde::Deserialize;

use crate::protocol::publish::PublishMsg;

/// Assigns each message its stream's next seq and publishes it, atomically, so that every
/// node sees the same seq for the same message whichever node took it in. `KEYS[1]` is the
/// hash of counters (field `_epoch` and one field per stream key); `ARGV[1]` a fresh epoch used
/// if the hash is gone (a new Redis, or one that lost its data); `ARGV[2]` the channel prefix;
/// then pairs of (stream key, the message after its opening brace).
pub const SEQUENCE_SCRIPT: &str = r#"
local e = redis.call('HGET', KEYS[1], '_epoch')
if not e then
  e = ARGV[1]
  redis.call('HSET', KEYS[1], '_epoch', e)
end
local head = '{"epoch":"' .. e .. '","seq":'
for i = 3, #ARGV, 2 do
  local seq = redis.call('HINCRBY', KEYS[1], ARGV[i], 1)
  redis.call('PUBLISH', ARGV[2] .. ARGV[i], head .. string.format('%d', seq) .. ',' .. ARGV[i + 1])
end
return (#ARGV - 2) / 2
"#;

/// The Redis hash holding the epoch and every stream's last seq.
pub fn seq_key(prefix: &str) -> String {
    format!("{prefix}seq")
}

/// The hash field of the epoch.
pub const EPOCH_FIELD: &str = "_epoch";

/// A message ready for the bus: its stream key and its body after the opening brace.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `exchange:symbol:dataType` (the hash field and the channel suffix).
    pub stream: String,
    /// `"exchange":…,"symbol":…,"dataType":…,"ts":…,"data":…}`.
    pub rest: String,
}

/// Encodes a validated message for the bus; `ts` defaults to `now_ms` so that every node
/// shows the same time.
pub fn encode(msg: &PublishMsg<'_>, now_ms: u64) -> Outgoing {
    let stream = format!("{}:{}:{}", msg.exchange, msg.symbol, msg.data_type);
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let rest = format!(
        "\"exchange\":{},\"symbol\":{},\"dataType\":{},\"ts\":{},\"data\":{}}}",
        q(&msg.exchange),
        q(&msg.symbol),
        q(&msg.data_type),
        msg.ts.unwrap_or(now_ms),
        msg.data
    );
    Outgoing { stream, rest }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
}

/// What a bus message carries besides the publisher message.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The epoch its seq belongs to (None: published into Redis by something else).
    pub epoch: Option<Cow<'a, str>>,
    /// The seq assigned in Redis.
    pub seq: Option<u64>,
}

/// Reads the epoch and seq of a bus message (the rest is parsed as a publisher message). A
/// batch (a JSON array, published into Redis by something else) has neither.
pub fn header(payload: &str) -> Result<Envelope<'_>, serde_json::Error> {
    if payload.trim_start().starts_with('[') {
        return Ok(Envelope {
            epoch: None,
            seq: None,
        });
    }
    let h: Header<'_> = serde_json::from_str(payload)?;
    Ok(Envelope {
        epoch: h.epoch,
        seq: h.seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::publish::parse_publish;

    #[test]
    fn encoded_message_reads_back_with_the_same_data() {
        let text = r#"{"exchange":"binance","symbol":"BTC\"USDT","dataType":"trade","data":{"p":"1.5", "q":[1,2]}}"#;
        let parsed = parse_publish(text, 64).unwrap();
        let msg = parsed[0].as_ref().unwrap();
        let out = encode(msg, 42);
        assert_eq!(out.stream, "binance:BTC\"USDT:trade");
        // What the script publishes: the header, then the rest.
        let wire = format!("{{\"epoch\":\"e1\",\"seq\":7,{}", out.rest);
        let env = header(&wire).unwrap();
        assert_eq!(env.epoch.as_deref(), Some("e1"));
        assert_eq!(env.seq, Some(7));
        let back = parse_publish(&wire, 64).unwrap();
        let back = back[0].as_ref().unwrap();
        assert_eq!(back.symbol, "BTC\"USDT");
        assert_eq!(back.ts, Some(42));
        assert_eq!(back.data, r#"{"p":"1.5", "q":[1,2]}"#);
    }

    #[test]
    fn plain_messages_have_no_seq() {
        let env = header(r#"{"exchange":"x","symbol":"y","dataType":"z","data":1}"#).unwrap();
        assert_eq!(
            env,
            Envelope {
                epoch: None,
                seq: None
            }
        );
        let batch = r#"[{"exchange":"x","symbol":"y","dataType":"z","data":1}]"#;
        assert_eq!(header(batch).unwrap().seq, None);
        assert!(header("not json").is_err());
    }
}
