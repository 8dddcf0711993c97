//! Reconnect delays: exponential backoff with +/-30% jitter, so that many clients or nodes
//! that lost the same server do not come back in step.

use std::time::Duration;

/// Jitter as a fraction of the delay, each way.
pub const JITTER_FRACTION: f64 = 0.3;

/// Exponential backoff from `min_ms` doubling to `max_ms`, each delay jittered by
/// +/-[`JITTER_FRACTION`].
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    next_ms: u64,
    rng: u64,
}

impl Backoff {
    /// A backoff seeded with `seed` (mix in something per instance: a pid, an address).
    pub fn new(min_ms: u64, max_ms: u64, seed: u64) -> Self {
        let min_ms = min_ms.max(1);
        Backoff {
            min_ms,
            max_ms: max_ms.max(min_ms),
            next_ms: min_ms,
            rng: seed ^ 0x2545_F491_4F6C_DD1D,
        }
    }

    /// The delay before the next attempt; each call doubles the base, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next_ms;
        self.next_ms = (self.next_ms.saturating_mul(2)).min(self.max_ms);
        let unit = (splitmix64(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
        let factor = 1.0 - JITTER_FRACTION + 2.0 * JITTER_FRACTION * unit;
        Duration::from_millis((base as f64 * factor).round() as u64)
    }

    /// After a success: the next failure waits the minimum again.
    pub fn reset(&mut self) {
        self.next_ms = self.min_ms;
    }
}

/// splitmix64: a small, good-enough generator for jitter.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed that differs between processes and calls (clock, pid, a stack address).
pub fn seed() -> u64 {
    let probe = 0u8;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32) ^ (&probe as *const u8 as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_in_range() {
        let mut b = Backoff::new(1_000, 30_000, 7);
        let bases = [1_000u64, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000];
        for base in bases {
            let d = b.next_delay().as_millis() as f64;
            let b = base as f64;
            assert!(d >= b * 0.7 - 1.0 && d <= b * 1.3 + 1.0, "{d} for base {b}");
        }
        b.reset();
        let d = b.next_delay().as_millis();
        assert!((700..=1300).contains(&d), "{d}");
    }

    #[test]
    fn jitter_spreads_instances() {
        let delays: std::collections::HashSet<u128> = (0..200)
            .map(|i| Backoff::new(1_000, 30_000, i).next_delay().as_millis())
            .collect();
        assert!(delays.len() > 100, "{}", delays.len());
        let min = delays.iter().min().copied().unwrap_or(0);
        let max = delays.iter().max().copied().unwrap_or(0);
        assert!(min < 800 && max > 1200, "{min}..{max}");
    }
}
