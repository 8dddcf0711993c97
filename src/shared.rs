//! State every thread can read: the configuration, the counters, and the shutdown flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::stats::StatsRegistry;

/// Read-mostly state shared by all threads.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the server started with.
    pub config: Config,
    /// Every counter.
    pub stats: StatsRegistry,
    shutdown: AtomicBool,
}

impl Shared {
    /// Shared state for `workers` workers.
    pub fn new(config: Config, workers: usize) -> Self {
        Shared {
            config,
            stats: StatsRegistry::new(workers),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Requests shutdown (threads notice at their next wake).
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
    }
}

/// Wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
