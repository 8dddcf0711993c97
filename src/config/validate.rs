//! Validation of a deserialised configuration: ranges and rules across keys, each error naming
//! its key.

use super::{sources, BusRole, Config, ConfigError, FeedKind};

impl Config {
    /// Checks ranges and cross-key rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.ingest_addr()?;
        self.admin_addr()?;
        self.log_level()?;
        let positive = [
            (
                "server.worker_channel_capacity",
                self.server.worker_channel_capacity,
            ),
            ("limits.max_connections", self.limits.max_connections),
            ("limits.max_message_bytes", self.limits.max_message_bytes),
            ("limits.max_publish_bytes", self.limits.max_publish_bytes),
            (
                "limits.max_filters_per_connection",
                self.limits.max_filters_per_connection,
            ),
            ("limits.max_streams", self.limits.max_streams),
            ("limits.max_name_bytes", self.limits.max_name_bytes),
            (
                "limits.messages_per_sec",
                self.limits.messages_per_sec as usize,
            ),
            ("limits.message_burst", self.limits.message_burst as usize),
            (
                "limits.rate_limit_strikes",
                self.limits.rate_limit_strikes as usize,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::key(key, "must be greater than 0"));
            }
        }
        crate::auth::Authenticator::from_config(&self.auth)?;
        self.bus.validate()?;
        sources::validate_upstreams(&self.upstream)?;
        if !self.upstream.is_empty() && self.bus.enabled() && self.bus.role == BusRole::Edge {
            return Err(ConfigError::key(
                "bus.role",
                "an edge node only reads the bus: [[upstream]] needs role ingest or both",
            ));
        }
        if self.backpressure.hard_limit_bytes < self.backpressure.soft_limit_bytes {
            return Err(ConfigError::key(
                "backpressure.hard_limit_bytes",
                "must be at least backpressure.soft_limit_bytes",
            ));
        }
        if self.batch.window_ms > 1_000 {
            return Err(ConfigError::key("batch.window_ms", "at most 1000"));
        }
        if self.server.workers > 1024 {
            return Err(ConfigError::key("server.workers", "at most 1024"));
        }
        if self.server.listen_backlog <= 0 {
            return Err(ConfigError::key(
                "server.listen_backlog",
                "must be greater than 0",
            ));
        }
        if self.limits.max_request_head_bytes < 512 {
            return Err(ConfigError::key(
                "limits.max_request_head_bytes",
                "at least 512",
            ));
        }
        if !(64..=1 << 20).contains(&self.limits.read_buffer_bytes) {
            return Err(ConfigError::key(
                "limits.read_buffer_bytes",
                "between 64 and 1048576",
            ));
        }
        if self.feed.source == Some(FeedKind::Synthetic) {
            if self.feed.rate_per_sec == 0 || self.feed.rate_per_sec > 1_000_000 {
                return Err(ConfigError::key(
                    "feed.rate_per_sec",
                    "between 1 and 1000000",
                ));
            }
            if self.feed.exchanges.is_empty() {
                return Err(ConfigError::key("feed.exchanges", "must not be empty"));
            }
            if self.feed.symbols.is_empty() {
                return Err(ConfigError::key("feed.symbols", "must not be empty"));
            }
        }
        Ok(())
    }
}
