//! State every thread can read: the configuration, the counters, and the shutdown phases.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::stats::StatsRegistry;

/// Read-mostly state shared by all threads.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the server started with.
    pub config: Config,
    /// Every counter.
    pub stats: StatsRegistry,
    drain_ingest: AtomicBool,
    drain_workers: AtomicBool,
    stop: AtomicBool,
    shutdown_started: OnceLock<Instant>,
}

impl Shared {
    /// Shared state for `workers` workers.
    pub fn new(config: Config, workers: usize) -> Self {
        Shared {
            config,
            stats: StatsRegistry::new(workers),
            drain_ingest: AtomicBool::new(false),
            drain_workers: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            shutdown_started: OnceLock::new(),
        }
    }

    /// Phase 1 of shutdown: sources (feed, publishers) stop and close.
    pub fn begin_ingest_drain(&self) {
        self.shutdown_started.get_or_init(Instant::now);
        self.drain_ingest.store(true, Ordering::Release);
    }

    /// Phase 2: workers stop accepting and close every subscriber with 1001.
    pub fn begin_worker_drain(&self) {
        self.shutdown_started.get_or_init(Instant::now);
        self.drain_workers.store(true, Ordering::Release);
    }

    /// Phase 3: every remaining thread stops now.
    pub fn stop_all(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Whether sources must stop.
    pub fn ingest_draining(&self) -> bool {
        self.drain_ingest.load(Ordering::Acquire)
    }

    /// Whether workers must drain.
    pub fn workers_draining(&self) -> bool {
        self.drain_workers.load(Ordering::Acquire)
    }

    /// Whether every thread must stop now.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// When the grace period ends (shutdown start + `shutdown.grace_ms`), once shutdown began.
    pub fn grace_deadline(&self) -> Option<Instant> {
        self.shutdown_started
            .get()
            .map(|t| *t + Duration::from_millis(self.config.shutdown.grace_ms))
    }
}

/// Wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
