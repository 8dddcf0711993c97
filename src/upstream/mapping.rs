//! Mapping an upstream exchange's messages onto tickfan's (symbol, dataType, ts, data): the
//! built-in Binance format and a general one driven by JSON pointers.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{UpstreamConfig, UpstreamFormat};

/// One upstream message, mapped.
#[derive(Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The symbol.
    pub symbol: String,
    /// The dataType.
    pub data_type: String,
    /// The exchange's event time in ms, when it has one.
    pub ts: Option<u64>,
    /// The JSON forwarded as `data`.
    pub data: String,
}

/// What became of one upstream text frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Market data.
    Data(Mapped),
    /// A control message (a reply to a subscribe request): nothing to forward.
    Control,
    /// Not understood; the reason is counted and logged (rate-limited).
    Unmapped(String),
}

/// Maps one text frame according to the entry's format.
pub fn map(cfg: &UpstreamConfig, text: &str) -> Outcome {
    match cfg.format {
        UpstreamFormat::Binance => binance(text),
        UpstreamFormat::Pointer => pointer(cfg, text),
    }
}

#[derive(Deserialize)]
struct Combined<'a> {
    #[serde(borrow)]
    stream: Option<&'a str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "e", borrow)]
    event: Option<&'a str>,
    #[serde(rename = "s", borrow)]
    symbol: Option<&'a str>,
    #[serde(rename = "E")]
    event_time: Option<u64>,
    #[serde(rename = "T")]
    trade_time: Option<u64>,
    /// bookTicker's update id (bookTicker events have no `e`).
    #[serde(rename = "u")]
    update_id: Option<u64>,
    /// Partial depth snapshots (`<symbol>@depth<n>`) have no `e` and no `s`.
    #[serde(rename = "lastUpdateId")]
    last_update_id: Option<u64>,
}

/// Binance's public market streams: raw (`/ws/<stream>`) or combined
/// (`/stream?streams=...`, `{"stream":..,"data":..}`). Event types map to dataTypes:
/// `trade` → trade, `aggTrade` → aggTrade, `24hrTicker` → ticker, `24hrMiniTicker` →
/// miniTicker, `depthUpdate` → depth, `kline` → kline, bookTicker → bookTicker, partial depth
/// (`@depth5`..) → depth.
pub fn binance(text: &str) -> Outcome {
    let Ok(outer) = serde_json::from_str::<Combined<'_>>(text) else {
        return Outcome::Unmapped("not a JSON object".into());
    };
    // A reply to a request: {"result":null,"id":1} (or an error with an id).
    if outer.data.is_none() && outer.id.is_some() {
        return Outcome::Control;
    }
    let (inner, stream) = match outer.data {
        Some(d) => (d.get(), outer.stream),
        None => (text, None),
    };
    let Ok(ev) = serde_json::from_str::<Event<'_>>(inner) else {
        return Outcome::Unmapped("data is not a JSON object".into());
    };
    let stream_symbol = stream
        .and_then(|s| s.split('@').next())
        .map(|s| s.to_ascii_uppercase());
    let data_type = match ev.event {
        Some("trade") => "trade",
        Some("aggTrade") => "aggTrade",
        Some("24hrTicker") => "ticker",
        Some("24hrMiniTicker") => "miniTicker",
        Some("depthUpdate") => "depth",
        Some("kline") => "kline",
        Some(other) => return Outcome::Unmapped(format!("unknown event type {other:?}")),
        None if ev.update_id.is_some() && ev.symbol.is_some() => "bookTicker",
        None if ev.last_update_id.is_some() => "depth",
        None => return Outcome::Unmapped("no event type".into()),
    };
    let Some(symbol) = ev.symbol.map(str::to_string).or(stream_symbol) else {
        return Outcome::Unmapped("no symbol".into());
    };
    Outcome::Data(Mapped {
        symbol,
        data_type: data_type.to_string(),
        ts: ev.event_time.or(ev.trade_time),
        data: inner.to_string(),
    })
}

fn pointer(cfg: &UpstreamConfig, text: &str) -> Outcome {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Outcome::Unmapped("not JSON".into());
    };
    let string_at = |p: &str| {
        v.pointer(p).and_then(|x| match x {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let Some(symbol) = string_at(&cfg.symbol_pointer) else {
        return Outcome::Unmapped(format!("no string at {}", cfg.symbol_pointer));
    };
    let data_type = if cfg.data_type_pointer.is_empty() {
        cfg.data_type.clone()
    } else {
        match string_at(&cfg.data_type_pointer) {
            Some(t) => t,
            None => return Outcome::Unmapped(format!("no string at {}", cfg.data_type_pointer)),
        }
    };
    let ts = if cfg.ts_pointer.is_empty() {
        None
    } else {
        v.pointer(&cfg.ts_pointer).and_then(|x| match x {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        })
    };
    let data = if cfg.data_pointer.is_empty() {
        text.to_string()
    } else {
        match v.pointer(&cfg.data_pointer) {
            Some(d) => d.to_string(),
            None => return Outcome::Unmapped(format!("nothing at {}", cfg.data_pointer)),
        }
    };
    Outcome::Data(Mapped {
        symbol,
        data_type,
        ts,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_raw_and_combined_streams() {
        // From Binance's documentation of the trade stream.
        let raw = r#"{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}"#;
        let Outcome::Data(m) = binance(raw) else {
            panic!("not mapped")
        };
        assert_eq!(
            (m.symbol.as_str(), m.data_type.as_str(), m.ts),
            ("BNBBTC", "trade", Some(1672515782136))
        );
        assert_eq!(m.data, raw);
        let combined = format!(r#"{{"stream":"bnbbtc@trade","data":{raw}}}"#);
        assert_eq!(binance(&combined), binance(raw));
        let ticker = r#"{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1,"s":"BTCUSDT","c":"50000.1"}}"#;
        let Outcome::Data(m) = binance(ticker) else {
            panic!()
        };
        assert_eq!(m.data_type, "ticker");
        let book =
            r#"{"u":400900217,"s":"BNBUSDT","b":"25.35","B":"31.21","a":"25.36","A":"40.66"}"#;
        let Outcome::Data(m) = binance(book) else {
            panic!()
        };
        assert_eq!((m.data_type.as_str(), m.ts), ("bookTicker", None));
        let partial =
            r#"{"stream":"ethusdt@depth5","data":{"lastUpdateId":160,"bids":[],"asks":[]}}"#;
        let Outcome::Data(m) = binance(partial) else {
            panic!()
        };
        assert_eq!(
            (m.symbol.as_str(), m.data_type.as_str()),
            ("ETHUSDT", "depth")
        );
    }

    #[test]
    fn binance_control_and_garbage() {
        assert_eq!(binance(r#"{"result":null,"id":1}"#), Outcome::Control);
        assert!(matches!(binance("garbage{"), Outcome::Unmapped(_)));
        assert!(matches!(binance("[1,2]"), Outcome::Unmapped(_)));
        assert!(matches!(
            binance(r#"{"e":"somethingNew","s":"X"}"#),
            Outcome::Unmapped(_)
        ));
    }

    #[test]
    fn pointer_format() {
        let cfg = UpstreamConfig {
            format: UpstreamFormat::Pointer,
            symbol_pointer: "/arg/instId".into(),
            data_type_pointer: "/arg/channel".into(),
            ts_pointer: "/data/0/ts".into(),
            data_pointer: "/data/0".into(),
            ..UpstreamConfig::default()
        };
        let text = r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"px":"1","ts":"1700000000000"}]}"#;
        let Outcome::Data(m) = map(&cfg, text) else {
            panic!()
        };
        assert_eq!(m.symbol, "BTC-USDT");
        assert_eq!(m.data_type, "trades");
        assert_eq!(m.ts, Some(1_700_000_000_000));
        assert_eq!(m.data, r#"{"px":"1","ts":"1700000000000"}"#);
        assert!(matches!(
            map(&cfg, r#"{"event":"subscribe"}"#),
            Outcome::Unmapped(_)
        ));
    }
}
