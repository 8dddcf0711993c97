//! Scale-out through Redis: nodes share one feed over Redis pub/sub. An ingest node sequences
//! each message in Redis (one Lua script assigns the stream's next seq and publishes, so every
//! node sees the same seq), and edge nodes subscribe and serve it. See docs/scaling.md.

pub mod envelope;
pub mod reader;
pub mod writer;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use writer::{Forwarder, Refused};

use crate::config::BusConfig;
use crate::ingest::Dispatcher;
use crate::shared::Shared;

/// Opens a command connection with the configured timeouts.
pub fn connect(cfg: &BusConfig) -> redis::RedisResult<redis::Connection> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let client = redis::Client::open(cfg.redis_url.trim())?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// The URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// Sleeps up to `d`, in short steps, returning false early if the sources must stop.
pub fn sleep_unless_draining(shared: &Shared, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if shared.ingest_draining() || shared.is_stopped() {
            return false;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// The bus threads of one node.
pub struct Bus {
    /// For sources, when this node writes the bus.
    pub forwarder: Option<Forwarder>,
    /// The reader and writer threads.
    pub threads: Vec<JoinHandle<()>>,
}

/// Starts the bus threads the role needs. Before that, an edge node tries once to adopt the
/// bus's epoch so that its first subscribers already get it.
pub fn start(shared: &Arc<Shared>, dispatcher: &Arc<Mutex<Dispatcher>>) -> std::io::Result<Bus> {
    let cfg = shared.config().bus.clone();
    let _ = shared.stats.bus_role.set(cfg.role);
    let mut bus = Bus {
        forwarder: None,
        threads: Vec::new(),
    };
    if cfg.role.reads() {
        match connect(&cfg) {
            Ok(mut con) => {
                if let Err(e) = reader::adopt_epoch(shared, &cfg, &mut con, dispatcher) {
                    log::warn!("bus: cannot read the epoch yet: {e}");
                }
            }
            Err(e) => log::warn!(
                "bus: {} not reachable at start ({e}); serving with a local epoch until it is",
                redacted(&cfg.redis_url)
            ),
        }
        let (s, c, d) = (shared.clone(), cfg.clone(), dispatcher.clone());
        bus.threads.push(
            std::thread::Builder::new()
                .name("tickfan-bus-reader".into())
                .spawn(move || reader::run(s, c, d))?,
        );
    }
    if cfg.role.writes() {
        let (forwarder, rx) = writer::channel(&cfg, shared.stats.bus.clone());
        // Connected before sources start, so the first publishes are not refused.
        let con = connect(&cfg).ok();
        if con.is_some() {
            shared
                .stats
                .bus
                .writer
                .set(crate::stats::sources::LinkState::Up);
        }
        let (s, c) = (shared.clone(), cfg.clone());
        bus.threads.push(
            std::thread::Builder::new()
                .name("tickfan-bus-writer".into())
                .spawn(move || writer::run(s, c, rx, con))?,
        );
        bus.forwarder = Some(forwarder);
    }
    Ok(bus)
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redacted("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(super::redacted("redis://h:1"), "redis://h:1");
    }
}
