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

/// Milliseconds on the same clock as [`mono_ns`] at `t`, plus one, so that a time taken is
/// never 0 (which callers keep for "never").
#[inline]
pub fn mono_ms_at(t: Instant) -> u64 {
    t.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_millis() as u64
        + 1
}

/// [`mono_ms_at`] now.
pub fn mono_ms() -> u64 {
    mono_ms_at(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_ms_is_never_zero_and_follows_mono_ns() {
        let first = mono_ms();
        assert!(first >= 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ns = mono_ns();
        let later = mono_ms();
        assert!(later >= first + 20);
        assert!(later >= ns / 1_000_000 && later <= ns / 1_000_000 + 2);
    }
}
