//! A process-wide monotonic clock in nanoseconds, so that an ingest timestamp taken on one
//! thread and a write time taken on another can be subtracted.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process (monotonic).
#[inline]
pub fn mono_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
