//! Configuration: the TOML schema with its defaults, loading, `--set` overrides and validation.
//!
//! Every key has a default (see `docs/configuration.md`). A configuration is built from a TOML
//! table: the file (if any), then dotted-key overrides, then deserialised strictly (unknown keys
//! are errors) and validated. Errors name the key and the reason.

use std::net::SocketAddr;

mod builder;
pub mod reload;
mod sources;
mod validate;

pub use builder::ConfigBuilder;
pub use sources::{BusConfig, BusRole, UpstreamConfig, UpstreamFormat};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A configuration error: which key, and why.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The path given.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key has a value of the wrong type, or is unknown.
    #[error("config key `{key}`: {reason}")]
    Key {
        /// The dotted name of the key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn key(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// Where market data comes from besides publishers on the ingest listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedKind {
    /// The embedded synthetic feed (random-walk prices for a few exchanges and symbols).
    Synthetic,
    /// No embedded feed: data comes only from publishers.
    None,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener addresses and worker count.
    pub server: ServerConfig,
    /// The embedded synthetic feed.
    pub feed: FeedConfig,
    /// Per-connection and process limits.
    pub limits: LimitsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Heartbeats and connection timeouts.
    pub heartbeat: HeartbeatConfig,
    /// Output batching.
    pub batch: BatchConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Slow consumers and memory limits.
    pub backpressure: BackpressureConfig,
    /// Health rules.
    pub health: HealthConfig,
    /// Authentication and authorisation.
    pub auth: AuthConfig,
    /// Per-stream history for snapshots and resume.
    pub history: HistoryConfig,
    /// The Redis bus between nodes.
    pub bus: BusConfig,
    /// Upstream exchange WebSocket feeds (`[[upstream]]`).
    pub upstream: Vec<UpstreamConfig>,
}

/// `[history]`: the ring of recent messages each worker keeps per stream, for `snapshot` and
/// `resume` on subscribe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Messages kept per stream (0: no history: no snapshots, no resume).
    pub size: usize,
    /// Messages older than this are not replayed (0: no age limit).
    pub ttl_ms: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            size: 100,
            ttl_ms: 300_000,
        }
    }
}

/// `[auth]`: who may subscribe to what, and who may publish.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for subscriber tokens; empty = no secret.
    pub jwt_secret: String,
    /// PEM public key (RSA or EC) for subscriber tokens signed with `jwt_algorithm`.
    pub jwt_public_key_file: String,
    /// `RS256` or `ES256`, with `jwt_public_key_file`.
    pub jwt_algorithm: String,
    /// When set, tokens must carry this audience (`aud`).
    pub jwt_audience: String,
    /// When set, tokens must carry this issuer (`iss`).
    pub jwt_issuer: String,
    /// Tokens that publishers must present on the ingest listener; empty = no check.
    pub publisher_tokens: Vec<String>,
    /// Browser origins allowed to open `/ws`; empty = any. Requests without `Origin` (not
    /// from a browser) are allowed.
    pub allowed_origins: Vec<String>,
}

impl AuthConfig {
    /// Whether subscribers must present a token.
    pub fn subscribers_need_token(&self) -> bool {
        !self.jwt_secret.is_empty() || !self.jwt_public_key_file.is_empty()
    }
}

/// `limits.connections_per_user`: how many connections one user (`sub`) may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PerUser {
    /// No limit (0).
    #[default]
    Unlimited,
    /// One; a new connection replaces the older one, which is closed with 4002.
    Replace,
    /// One; a new connection is refused (HTTP 429) while the older one is open.
    Reject,
    /// At most this many; more are refused (HTTP 429).
    Max(u32),
}

impl Serialize for PerUser {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PerUser::Unlimited => s.serialize_u32(0),
            PerUser::Replace => s.serialize_str("replace"),
            PerUser::Reject => s.serialize_str("reject"),
            PerUser::Max(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for PerUser {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(0) => Ok(PerUser::Unlimited),
            Raw::N(n) => Ok(PerUser::Max(n)),
            Raw::S(s) if s == "replace" => Ok(PerUser::Replace),
            Raw::S(s) if s == "reject" => Ok(PerUser::Reject),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "expected \"replace\", \"reject\" or a number, got \"{s}\""
            ))),
        }
    }
}

/// `[health]`: when `/health` says degraded or unhealthy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// A worker whose loop has not turned for this long is stalled (degraded; unhealthy when
    /// every worker is). Also the liveness rule of the systemd watchdog.
    pub worker_stall_ms: u64,
    /// Unhealthy when no message was accepted for this long; 0 = never (a quiet feed is fine).
    pub max_ingest_silence_ms: u64,
    /// Degraded for this long after a server-side error (`lastError`).
    pub error_window_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            worker_stall_ms: 5_000,
            max_ingest_silence_ms: 0,
            error_window_ms: 30_000,
        }
    }
}

/// What happens to a data message for a connection whose output queue is over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Close the connection with 4001 "slow consumer" (ordered streams: trades, depth deltas).
    Disconnect,
    /// Keep only the newest queued message of each stream (state-like streams: tickers).
    Conflate,
    /// Drop new messages while over the limit and tell the client how many it missed.
    Drop,
}

/// `[backpressure]`: bounded output per connection and for the process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureConfig {
    /// Pending output above which a connection may stay only `soft_grace_ms`.
    pub soft_limit_bytes: usize,
    /// Pending output above which the policy applies at once.
    pub hard_limit_bytes: usize,
    /// How long a connection may stay above the soft limit before the policy applies.
    pub soft_grace_ms: u64,
    /// The policy for data types not listed in `policy_by_data_type`.
    pub policy: Policy,
    /// Policies by dataType.
    pub policy_by_data_type: std::collections::BTreeMap<String, Policy>,
    /// Resident memory above which the slowest consumers are shed and health is degraded;
    /// 0 = no guard.
    pub memory_limit_bytes: u64,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        BackpressureConfig {
            soft_limit_bytes: 64 * 1024,
            hard_limit_bytes: 1024 * 1024,
            soft_grace_ms: 2_000,
            policy: Policy::Disconnect,
            policy_by_data_type: [("ticker".to_string(), Policy::Conflate)]
                .into_iter()
                .collect(),
            memory_limit_bytes: 512 * 1024 * 1024,
        }
    }
}

impl BackpressureConfig {
    /// The policy for a data type.
    pub fn policy_for(&self, data_type: &str) -> Policy {
        self.policy_by_data_type
            .get(data_type)
            .copied()
            .unwrap_or(self.policy)
    }
}

/// `[heartbeat]`: liveness of connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Silence from a client after which the server sends a WebSocket ping.
    pub ping_interval_ms: u64,
    /// Further silence after the ping before the connection is closed with 1001.
    pub pong_timeout_ms: u64,
    /// Time a new socket has to complete its HTTP request / WebSocket upgrade.
    pub handshake_timeout_ms: u64,
    /// Time a closing connection has to finish the close handshake before it is dropped.
    pub close_timeout_ms: u64,
}

/// `[batch]`: coalescing a connection's data frames into fewer writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// How long a connection's first queued data frame may wait for company; 0 = write at the
    /// end of every loop turn.
    pub window_ms: u64,
    /// Queued data frames that flush a connection at once.
    pub max_messages: u32,
    /// Queued bytes that flush a connection at once.
    pub max_bytes: usize,
}

/// `[shutdown]`: graceful stop on SIGTERM/SIGINT.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long to wait for close replies after sending close 1001 to everyone.
    pub grace_ms: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            ping_interval_ms: 20_000,
            pong_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            close_timeout_ms: 5_000,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            window_ms: 0,
            max_messages: 10,
            max_bytes: 64 * 1024,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_ms: 5_000 }
    }
}

/// `[server]`: listeners and threads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Public listener (`/ws`, `/health`); `"off"` turns it off.
    pub listen: String,
    /// Ingest listener (`/publish`); `"off"` turns it off.
    pub ingest: String,
    /// Admin listener (`/health`, `/stats`, `/metrics`, `/flush`); `"off"` turns it off.
    pub admin: String,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Capacity of each worker's inbound data channel, in messages.
    pub worker_channel_capacity: usize,
    /// Listen backlog of every listener.
    pub listen_backlog: i32,
    /// SO_SNDBUF of subscriber sockets in bytes; 0 = the kernel's autotuning. A fixed size
    /// bounds the kernel memory of a slow client and makes backpressure apply sooner.
    pub send_buffer_bytes: usize,
    /// Where publishers are served: `thread` (an ingest thread of its own), `worker` (worker 0's
    /// loop serves them too, with no thread hand-off per frame), or `auto` (`worker` when there
    /// is one worker).
    pub ingest_placement: IngestPlacement,
    /// Whether workers write through io_uring: a flush's sends, one per connection, go to the
    /// kernel in one submission. Where the kernel refuses a ring (io_uring disabled, a seccomp
    /// filter) workers use plain `send`/`writev` calls, as they do with `false`.
    pub io_uring: bool,
}

/// Where the ingest listener is served (`server.ingest_placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestPlacement {
    /// `worker` with one worker, `thread` with more.
    Auto,
    /// Worker 0's loop.
    Worker,
    /// A thread of its own.
    Thread,
}

/// `[feed]`: the embedded synthetic feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedConfig {
    /// `synthetic` or `none`. Unset: synthetic without a config file, none with one.
    pub source: Option<FeedKind>,
    /// Messages per second the synthetic feed publishes, over all its streams.
    pub rate_per_sec: u32,
    /// Exchanges the synthetic feed serves.
    pub exchanges: Vec<String>,
    /// Symbols the synthetic feed serves on every exchange.
    pub symbols: Vec<String>,
}

/// `[limits]`: what one connection, or the process, may use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections on the public listener, all workers together (HTTP 503 past it).
    pub max_connections: usize,
    /// Largest client message (and frame) in bytes; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Largest publisher message (a whole batch frame) in bytes.
    pub max_publish_bytes: usize,
    /// Largest HTTP request head in bytes (431 past it).
    pub max_request_head_bytes: usize,
    /// Filters one connection may hold (TOO_MANY_SUBSCRIPTIONS past it).
    pub max_filters_per_connection: usize,
    /// Distinct streams the gateway accepts before refusing new ones (TOO_MANY_STREAMS).
    pub max_streams: usize,
    /// Longest exchange, symbol or dataType name in bytes.
    pub max_name_bytes: usize,
    /// Sustained client messages per second per connection (token bucket rate).
    pub messages_per_sec: u32,
    /// Client messages a connection may send in a burst (token bucket size).
    pub message_burst: u32,
    /// RATE_LIMITED replies in a row after which the connection is closed with 1008.
    pub rate_limit_strikes: u32,
    /// tungstenite read buffer per connection, in bytes.
    pub read_buffer_bytes: usize,
    /// Close connections older than this with 1001 (plus a jitter of up to a tenth of it);
    /// 0 = never.
    pub max_lifetime_ms: u64,
    /// Connections per user (`sub` of the token): 0, a number, `replace` or `reject`.
    pub connections_per_user: PerUser,
    /// Open sockets per client IP on the public listener (HTTP 429 past it); 0 = no limit.
    pub max_connections_per_ip: u32,
    /// New connections per client IP per minute (HTTP 429 past it); 0 = no limit.
    pub new_connections_per_ip_per_min: u32,
}

/// `[log]`: logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace` or `off`.
    pub level: String,
    /// Log to this file instead of stderr (reopened on SIGHUP, for logrotate).
    pub file: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            ingest: "127.0.0.1:8081".into(),
            admin: "127.0.0.1:9090".into(),
            workers: 0,
            worker_channel_capacity: 65_536,
            listen_backlog: 1024,
            send_buffer_bytes: 0,
            ingest_placement: IngestPlacement::Auto,
            io_uring: true,
        }
    }
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            source: None,
            rate_per_sec: 300,
            exchanges: vec!["binance".into(), "coinbase".into(), "kraken".into()],
            symbols: [
                "BTCUSDT",
                "ETHUSDT",
                "SOLUSDT",
                "XRPUSDT",
                "ADAUSDT",
                "DOGEUSDT",
                "AVAXUSDT",
                "DOTUSDT",
                "LINKUSDT",
                "LTCUSDT",
                "MATICUSDT",
                "TRXUSDT",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 100_000,
            max_message_bytes: 16 * 1024,
            max_publish_bytes: 1024 * 1024,
            max_request_head_bytes: 8 * 1024,
            max_filters_per_connection: 128,
            max_streams: 100_000,
            max_name_bytes: 64,
            messages_per_sec: 10,
            message_burst: 20,
            rate_limit_strikes: 20,
            read_buffer_bytes: 128,
            max_lifetime_ms: 0,
            connections_per_user: PerUser::Unlimited,
            max_connections_per_ip: 1_000,
            new_connections_per_ip_per_min: 1_200,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            file: None,
        }
    }
}

/// Parses a listener address; `"off"` or `""` means the listener is turned off.
pub fn parse_listen(key: &str, text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    t.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| ConfigError::key(key, format!("`{t}` is not an address like 0.0.0.0:8080")))
}

impl Config {
    /// A configuration for tests: every listener on 127.0.0.1 port 0, no feed, one worker.
    pub fn for_tests() -> Config {
        let mut c = Config::default();
        c.server.listen = "127.0.0.1:0".into();
        c.server.ingest = "127.0.0.1:0".into();
        c.server.admin = "127.0.0.1:0".into();
        c.server.workers = 1;
        c.feed.source = Some(FeedKind::None);
        c.log.level = "warn".into();
        c
    }

    /// The public listener address, if on.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        parse_listen("server.listen", &self.server.listen)
    }

    /// The ingest listener address, if on.
    pub fn ingest_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        parse_listen("server.ingest", &self.server.ingest)
    }

    /// The admin listener address, if on.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        parse_listen("server.admin", &self.server.admin)
    }

    /// Whether worker 0 serves the ingest listener itself.
    pub fn ingest_on_worker(&self) -> bool {
        match self.server.ingest_placement {
            IngestPlacement::Worker => true,
            IngestPlacement::Thread => false,
            IngestPlacement::Auto => self.worker_count() == 1,
        }
    }

    /// The worker count with 0 resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.server.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.server.workers
        }
    }

    /// The log level filter.
    pub fn log_level(&self) -> Result<log::LevelFilter, ConfigError> {
        self.log.level.parse().map_err(|_| {
            ConfigError::key(
                "log.level",
                "expected one of off, error, warn, info, debug, trace",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_feed_is_synthetic_without_file() {
        let c = ConfigBuilder::new().build().unwrap();
        assert_eq!(c.feed.source, Some(FeedKind::Synthetic));
        assert_eq!(c.limits.max_message_bytes, 16384);
        assert_eq!(c.listen_addr().unwrap().unwrap().port(), 8080);
    }

    #[test]
    fn set_overrides_nested_keys_with_typed_values() {
        let c = ConfigBuilder::new()
            .set_pair("limits.max_connections=100")
            .unwrap()
            .set_pair("feed.symbols=[\"A\",\"B\"]")
            .unwrap()
            .set_pair("server.listen=off")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.limits.max_connections, 100);
        assert_eq!(c.feed.symbols, vec!["A", "B"]);
        assert_eq!(c.listen_addr().unwrap(), None);
    }

    #[test]
    fn policies_by_data_type() {
        let c = ConfigBuilder::new()
            .set_pair("backpressure.policy_by_data_type={depth=\"drop\"}")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.backpressure.policy_for("depth"), Policy::Drop);
        assert_eq!(c.backpressure.policy_for("trade"), Policy::Disconnect);
        assert_eq!(
            Config::default().backpressure.policy_for("ticker"),
            Policy::Conflate
        );
        let e = ConfigBuilder::new()
            .set_pair("backpressure.policy=maybe")
            .unwrap()
            .build();
        assert!(e.unwrap_err().to_string().contains("backpressure.policy"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = ConfigBuilder::new()
            .set_pair("limits.max_connections=abc")
            .unwrap()
            .build();
        let msg = e.unwrap_err().to_string();
        assert!(msg.contains("limits.max_connections"), "{msg}");
        let e = ConfigBuilder::new()
            .set_pair("limits.nope=1")
            .unwrap()
            .build();
        let msg = e.unwrap_err().to_string();
        assert!(msg.contains("nope"), "{msg}");
        let e = ConfigBuilder::new()
            .set_pair("server.listen=nowhere")
            .unwrap()
            .build();
        assert!(e.unwrap_err().to_string().contains("server.listen"));
        let e = ConfigBuilder::new()
            .set_pair("limits.max_streams=0")
            .unwrap()
            .build();
        assert!(e.unwrap_err().to_string().contains("limits.max_streams"));
    }
}
