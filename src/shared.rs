//! State every thread can read: the configuration, the counters, and the shutdown phases.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::stats::StatsRegistry;

/// Read-mostly state shared by all threads.
#[derive(Debug)]
pub struct Shared {
    config: RwLock<Arc<Config>>,
    config_generation: AtomicU64,
    /// Every counter.
    pub stats: StatsRegistry,
    drain_ingest: AtomicBool,
    drain_workers: AtomicBool,
    stop: AtomicBool,
    shutdown_started: OnceLock<Instant>,
    last_error: Mutex<Option<LastError>>,
    /// Per-IP and per-user admission counts.
    pub admission: crate::admission::Admission,
    links: OnceLock<Vec<crate::bus::WorkerLink>>,
    /// A worker serves the ingest listener and has not finished its drain yet.
    ingest_on_worker: AtomicBool,
    /// A random id chosen at start (or the bus's): seqs of another epoch cannot be resumed.
    epoch: RwLock<Arc<str>>,
}

/// The last server-side error (not a client's mistake): what and when.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastError {
    /// What happened.
    pub message: String,
    /// When, ms since the epoch.
    pub timestamp: u64,
}

impl Shared {
    /// Shared state for `workers` workers.
    pub fn new(config: Config, workers: usize) -> Self {
        Shared {
            config: RwLock::new(Arc::new(config)),
            config_generation: AtomicU64::new(0),
            stats: StatsRegistry::new(workers),
            drain_ingest: AtomicBool::new(false),
            drain_workers: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            shutdown_started: OnceLock::new(),
            last_error: Mutex::new(None),
            admission: crate::admission::Admission::default(),
            links: OnceLock::new(),
            epoch: RwLock::new(new_epoch().into()),
            ingest_on_worker: AtomicBool::new(false),
        }
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bumped on every reload; threads compare it once per loop turn and re-read the config.
    pub fn config_generation(&self) -> u64 {
        self.config_generation.load(Ordering::Acquire)
    }

    /// Replaces the configuration in force (SIGHUP reload).
    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        self.config_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Sets the workers' inboxes once they exist (for messages between workers).
    pub fn set_links(&self, links: Vec<crate::bus::WorkerLink>) {
        let _ = self.links.set(links);
    }

    /// The epoch in force: seqs are comparable only within one epoch.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adopts another epoch (the bus's); returns whether it changed.
    pub fn set_epoch(&self, epoch: &str) -> bool {
        let mut e = self.epoch.write().unwrap_or_else(PoisonError::into_inner);
        if &**e == epoch {
            return false;
        }
        *e = epoch.into();
        true
    }

    /// Worker `index`'s inbox, once the workers exist.
    pub fn link(&self, index: usize) -> Option<&crate::bus::WorkerLink> {
        self.links.get().and_then(|l| l.get(index))
    }

    /// Records a server-side error for `/health` (`lastError`) and logs it at warn.
    pub fn record_error(&self, message: impl Into<String>) {
        let message = message.into();
        log::warn!("{message}");
        let e = LastError {
            message,
            timestamp: now_ms(),
        };
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e);
    }

    /// The last server-side error, if any.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Set while a worker serves the ingest listener and its publishers are not all closed.
    pub fn set_ingest_on_worker(&self, active: bool) {
        self.ingest_on_worker.store(active, Ordering::Release);
    }

    /// Whether a worker still serves publishers (shutdown waits for them before phase 2).
    pub fn ingest_on_worker(&self) -> bool {
        self.ingest_on_worker.load(Ordering::Acquire)
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
            .map(|t| *t + Duration::from_millis(self.config().shutdown.grace_ms))
    }
}

/// A random 64-bit id in hex, from the clock, the pid and the address of a stack value mixed
/// by splitmix64 (unique per start; not a secret).
pub fn new_epoch() -> String {
    let probe = 0u8;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = (nanos as u64) ^ ((std::process::id() as u64) << 32) ^ (&probe as *const u8 as u64);
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("{:016x}", z ^ (z >> 31))
}

/// Wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
