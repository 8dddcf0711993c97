//! The synthetic feed: random-walk trades, tickers and depth for a few exchanges and symbols,
//! so that a fresh `cargo run --release` shows live data at once.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

use crate::config::FeedConfig;
use crate::ingest::Sink;
use crate::protocol::publish::PublishMsg;
use crate::shared::{now_ms, Shared};

/// Time between publishing bursts.
const TICK_MS: u64 = 10;
/// The data types the feed produces.
const DATA_TYPES: [&str; 3] = ["trade", "ticker", "depth"];

/// A small xorshift generator: deterministic per seed, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// A float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// An index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One market: an exchange and symbol with a random-walk price.
#[derive(Debug, Clone)]
struct Market {
    exchange: String,
    symbol: String,
    price: f64,
    volume: f64,
    trade_id: u64,
}

/// The feed's state: markets and the generator.
#[derive(Debug)]
pub struct SyntheticFeed {
    markets: Vec<Market>,
    rng: Rng,
    buf: String,
}

impl SyntheticFeed {
    /// A feed over every exchange × symbol of the config.
    pub fn new(config: &FeedConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut markets = Vec::new();
        for ex in &config.exchanges {
            for (i, sym) in config.symbols.iter().enumerate() {
                let base =
                    [50_000.0, 3_000.0, 150.0, 0.6, 0.45, 0.12][i % 6] * (1.0 + rng.unit() / 100.0);
                markets.push(Market {
                    exchange: ex.clone(),
                    symbol: sym.clone(),
                    price: base,
                    volume: 1_000.0 + rng.unit() * 1_000.0,
                    trade_id: 0,
                });
            }
        }
        SyntheticFeed {
            markets,
            rng,
            buf: String::new(),
        }
    }

    /// Number of streams the feed publishes.
    pub fn stream_count(&self) -> usize {
        self.markets.len() * DATA_TYPES.len()
    }

    /// Generates the next message and hands it to `sink`.
    pub fn next_message<R>(&mut self, sink: impl FnOnce(&PublishMsg<'_>) -> R) -> R {
        let m = self.rng.below(self.markets.len());
        let dt = DATA_TYPES[self.rng.below(DATA_TYPES.len())];
        let step = (self.rng.unit() - 0.5) * 0.002;
        let market = &mut self.markets[m];
        market.price *= 1.0 + step;
        let p = market.price;
        let decimals = if p >= 100.0 { 2 } else { 5 };
        self.buf.clear();
        match dt {
            "trade" => {
                market.trade_id += 1;
                let qty = self.rng.unit() * 2.0;
                market.volume += qty;
                let side = if step >= 0.0 { "buy" } else { "sell" };
                let _ = write!(
                    self.buf,
                    r#"{{"tradeId":{},"price":"{p:.decimals$}","qty":"{qty:.4}","side":"{side}"}}"#,
                    market.trade_id
                );
            }
            "ticker" => {
                let spread = p * 0.0001;
                let _ = write!(
                    self.buf,
                    r#"{{"bid":"{:.decimals$}","ask":"{:.decimals$}","last":"{p:.decimals$}","volume24h":"{:.2}"}}"#,
                    p - spread,
                    p + spread,
                    market.volume
                );
            }
            _ => {
                self.buf.push_str(r#"{"bids":["#);
                for side in 0..2 {
                    if side == 1 {
                        self.buf.push_str(r#"],"asks":["#);
                    }
                    for level in 0..5 {
                        let off = p * 0.0001 * (level + 1) as f64;
                        let price = if side == 0 { p - off } else { p + off };
                        let qty = self.rng.unit() * 5.0;
                        let comma = if level > 0 { "," } else { "" };
                        let _ = write!(self.buf, r#"{comma}["{price:.decimals$}","{qty:.4}"]"#);
                    }
                }
                self.buf.push_str("]}");
            }
        }
        let market = &self.markets[m];
        let msg = PublishMsg {
            exchange: Cow::Borrowed(&market.exchange),
            symbol: Cow::Borrowed(&market.symbol),
            data_type: Cow::Borrowed(dt),
            ts: None,
            data: &self.buf,
        };
        sink(&msg)
    }
}

/// Runs the feed until shutdown: `rate_per_sec` messages per second in bursts every
/// [`TICK_MS`].
pub fn run(shared: Arc<Shared>, sink: Sink) {
    let full = shared.config();
    let config = &full.feed;
    let mut feed = SyntheticFeed::new(config, now_ms() ^ 0x9E37_79B9_7F4A_7C15);
    info!(
        "synthetic feed: {} msg/s over {} streams ({} exchanges x {} symbols x trade/ticker/depth)",
        config.rate_per_sec,
        feed.stream_count(),
        config.exchanges.len(),
        config.symbols.len()
    );
    let start = Instant::now();
    let mut sent: u64 = 0;
    while !shared.ingest_draining() && !shared.is_stopped() {
        std::thread::sleep(Duration::from_millis(TICK_MS));
        let due = start.elapsed().as_secs_f64() * config.rate_per_sec as f64;
        let now = now_ms();
        let mut accepted = 0;
        while (sent as f64) < due {
            // Refusals (a full stream table, the bus down) are counted by the sink.
            accepted += feed.next_message(|msg| sink.publish_quietly([(0, msg)], now).0);
            sent += 1;
        }
        sink.wake();
        shared.stats.ingest.accepted_from_feed.add(accepted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_valid_publisher_json() {
        let mut feed = SyntheticFeed::new(&FeedConfig::default(), 42);
        assert_eq!(feed.stream_count(), 3 * 12 * 3);
        for _ in 0..300 {
            feed.next_message(|m| {
                let v: serde_json::Value = serde_json::from_str(m.data).unwrap();
                assert!(v.is_object(), "{}", m.data);
                assert!(!m.exchange.is_empty() && !m.symbol.is_empty());
            });
        }
    }
}
