//! The configuration of data sources beyond the ingest listener: the Redis bus (`[bus]`) and
//! upstream exchange WebSocket feeds (`[[upstream]]`).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// What a node does with the Redis bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusRole {
    /// Read the bus and serve it to subscribers; `/publish` is refused.
    Edge,
    /// Write what `/publish` (and upstreams, and the feed) receive into the bus; serve nothing.
    Ingest,
    /// Both: publishers may talk to any node, and every node serves the bus.
    Both,
}

impl BusRole {
    /// Whether this node reads the bus.
    pub fn reads(self) -> bool {
        matches!(self, BusRole::Edge | BusRole::Both)
    }

    /// Whether this node writes the bus.
    pub fn writes(self) -> bool {
        matches!(self, BusRole::Ingest | BusRole::Both)
    }

    /// The name as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            BusRole::Edge => "edge",
            BusRole::Ingest => "ingest",
            BusRole::Both => "both",
        }
    }
}

/// `[bus]`: scale-out across nodes through Redis pub/sub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// `redis://host:port[/db]`; empty: no bus.
    pub redis_url: String,
    /// `edge`, `ingest` or `both`.
    pub role: BusRole,
    /// Prefix of every channel and key tickfan uses in Redis.
    pub channel_prefix: String,
    /// Channel patterns an edge subscribes to (PSUBSCRIBE); empty: `<channel_prefix>*`.
    pub channels: Vec<String>,
    /// First reconnect delay after the bus is lost.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay (the delay doubles up to this, with +/-30% jitter).
    pub reconnect_max_ms: u64,
    /// Messages waiting to be written to the bus; beyond this they are refused and counted.
    pub queue_capacity: usize,
    /// Connect and command timeout.
    pub timeout_ms: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            redis_url: String::new(),
            role: BusRole::Both,
            channel_prefix: "tickfan:".into(),
            channels: Vec::new(),
            reconnect_min_ms: 250,
            reconnect_max_ms: 5_000,
            queue_capacity: 65_536,
            timeout_ms: 2_000,
        }
    }
}

impl BusConfig {
    /// Whether a bus is configured.
    pub fn enabled(&self) -> bool {
        !self.redis_url.trim().is_empty()
    }

    /// The patterns an edge subscribes to.
    pub fn patterns(&self) -> Vec<String> {
        if self.channels.is_empty() {
            vec![format!("{}*", self.channel_prefix)]
        } else {
            self.channels.clone()
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        redis::Client::open(self.redis_url.trim())
            .map_err(|e| ConfigError::key("bus.redis_url", format!("not a Redis URL: {e}")))?;
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(ConfigError::key(
                "bus.reconnect_max_ms",
                "reconnect_min_ms must be > 0 and at most reconnect_max_ms",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::key(
                "bus.queue_capacity",
                "must be greater than 0",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(ConfigError::key("bus.timeout_ms", "must be greater than 0"));
        }
        Ok(())
    }
}

/// How an upstream's messages map onto tickfan's (exchange, symbol, dataType, ts, data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamFormat {
    /// Binance's public market streams (raw `/ws` or combined `/stream` messages): trade,
    /// aggTrade, 24hrTicker, bookTicker, depthUpdate, kline.
    Binance,
    /// Fields picked by JSON pointers (`symbol_pointer`, `data_type_pointer`, ...).
    Pointer,
}

/// One `[[upstream]]` entry: an exchange WebSocket feed this node connects to itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A name for logs and stats (unique).
    pub name: String,
    /// `ws://` or `wss://` URL.
    pub url: String,
    /// The exchange name given to every message.
    pub exchange: String,
    /// Text frames sent after connecting (subscribe requests), in order.
    pub subscribe: Vec<String>,
    /// The message shape.
    pub format: UpstreamFormat,
    /// `pointer` format: where the symbol is (e.g. `/s`).
    pub symbol_pointer: String,
    /// `pointer` format: where the dataType is; empty: `data_type` is used.
    pub data_type_pointer: String,
    /// `pointer` format: a fixed dataType.
    pub data_type: String,
    /// `pointer` format: where the timestamp in ms is (optional).
    pub ts_pointer: String,
    /// `pointer` format: the value forwarded as `data`; empty: the whole message.
    pub data_pointer: String,
    /// A WebSocket ping is sent this often.
    pub ping_interval_ms: u64,
    /// No message (data or pong) for this long: the connection is stale and is replaced.
    pub stale_after_ms: u64,
    /// First reconnect delay.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay (doubling, +/-30% jitter).
    pub reconnect_max_ms: u64,
    /// Connect (TCP, TLS and handshake) timeout.
    pub connect_timeout_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: String::new(),
            url: String::new(),
            exchange: String::new(),
            subscribe: Vec::new(),
            format: UpstreamFormat::Binance,
            symbol_pointer: String::new(),
            data_type_pointer: String::new(),
            data_type: String::new(),
            ts_pointer: String::new(),
            data_pointer: String::new(),
            ping_interval_ms: 15_000,
            stale_after_ms: 45_000,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 30_000,
            connect_timeout_ms: 10_000,
        }
    }
}

/// Checks every `[[upstream]]` entry.
pub(super) fn validate_upstreams(list: &[UpstreamConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    for (i, u) in list.iter().enumerate() {
        let key = |k: &str| format!("upstream[{i}].{k}");
        if u.name.trim().is_empty() {
            return Err(ConfigError::key(&key("name"), "required"));
        }
        if !names.insert(u.name.as_str()) {
            return Err(ConfigError::key(&key("name"), "names must be unique"));
        }
        if !(u.url.starts_with("ws://") || u.url.starts_with("wss://")) {
            return Err(ConfigError::key(
                &key("url"),
                "must start with ws:// or wss://",
            ));
        }
        if u.exchange.trim().is_empty() {
            return Err(ConfigError::key(&key("exchange"), "required"));
        }
        if u.format == UpstreamFormat::Pointer {
            if u.symbol_pointer.is_empty() {
                return Err(ConfigError::key(
                    &key("symbol_pointer"),
                    "required by format pointer",
                ));
            }
            if u.data_type_pointer.is_empty() && u.data_type.is_empty() {
                return Err(ConfigError::key(
                    &key("data_type"),
                    "format pointer needs data_type or data_type_pointer",
                ));
            }
        }
        if u.reconnect_min_ms == 0 || u.reconnect_max_ms < u.reconnect_min_ms {
            return Err(ConfigError::key(
                &key("reconnect_max_ms"),
                "reconnect_min_ms must be > 0 and at most reconnect_max_ms",
            ));
        }
        if u.ping_interval_ms == 0 || u.stale_after_ms <= u.ping_interval_ms {
            return Err(ConfigError::key(
                &key("stale_after_ms"),
                "must be greater than ping_interval_ms (> 0)",
            ));
        }
        if u.connect_timeout_ms == 0 {
            return Err(ConfigError::key(
                &key("connect_timeout_ms"),
                "must be greater than 0",
            ));
        }
    }
    Ok(())
}
