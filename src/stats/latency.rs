//! Delivery latency: from the moment the gateway accepted a message to the write that put its
//! frame on a subscriber's socket, in microseconds. Each worker records into its own histogram
//! and publishes it every housekeeping tick; readers merge the published ones.

use std::sync::{Mutex, PoisonError};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency tracked, in µs (longer ones are clamped): 60 s.
const MAX_US: u64 = 60_000_000;

fn new_histogram() -> Histogram<u64> {
    // 2 significant figures (1% resolution) over 1 µs .. 60 s: about 2,500 counters (20 KiB)
    // instead of 17,000 for 3 figures; merging and resetting walk them all, several times a
    // second per worker.
    Histogram::new_with_bounds(1, MAX_US, 2).expect("constant histogram bounds are valid")
}

/// Linear buckets below this many µs (one per µs).
const LINEAR_US: u64 = 128;
/// Sub-buckets per power of two above [`LINEAR_US`] (1.6% resolution).
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two from 2^7 up to 2^26 µs (67 s) cover [`MAX_US`].
const COUNTERS: usize = LINEAR_US as usize + (26 - 7 + 1) * SUB;

/// The bucket of a latency in µs: exact below 128 µs, then 64 buckets per power of two.
#[inline]
fn bucket(us: u64) -> usize {
    if us < LINEAR_US {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= 7
    let sub = ((us >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    LINEAR_US as usize + (exp as usize - 7) * SUB + sub
}

/// The middle of a bucket, in µs (what its samples are counted as).
fn bucket_value(index: usize) -> u64 {
    if index < LINEAR_US as usize {
        return index as u64;
    }
    let i = index - LINEAR_US as usize;
    let exp = (i / SUB) as u32 + 7;
    let sub = (i % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    (1u64 << exp) + sub * width + width / 2
}

/// A worker's own recorder (no lock): a fixed array of log-linear counters, a few instructions a
/// sample on the delivery path; moved into the shared histograms at each housekeeping tick.
#[derive(Debug)]
pub struct LatencyRecorder {
    counts: Box<[u32; COUNTERS]>,
    recorded: u64,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            counts: Box::new([0; COUNTERS]),
            recorded: 0,
        }
    }
}

impl LatencyRecorder {
    /// Records one delivery that took `ns` nanoseconds.
    #[inline]
    pub fn record_ns(&mut self, ns: u64) {
        let us = (ns / 1_000).clamp(1, MAX_US);
        let c = &mut self.counts[bucket(us)];
        *c = c.saturating_add(1);
        self.recorded += 1;
    }

    /// Moves what was recorded into `shared` (the published histograms): the total since
    /// start, and the current one-second window (rotated here, so an idle worker's window
    /// empties too). Each non-empty counter is recorded straight into both: no histogram of
    /// the worker's own to merge (a walk of all 2,560 of its counters per histogram) and to
    /// clear (20 KiB) at every tick.
    pub fn publish(&mut self, shared: &SharedLatency) {
        let mut w = shared.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.started.elapsed() >= WINDOW {
            let Window {
                current, previous, ..
            } = &mut *w;
            std::mem::swap(current, previous);
            current.reset();
            w.started = std::time::Instant::now();
        }
        if self.recorded == 0 {
            return;
        }
        let mut total = shared.total.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, c) in self.counts.iter_mut().enumerate() {
            if *c > 0 {
                let (value, n) = (bucket_value(i).clamp(1, MAX_US), u64::from(*c));
                // Within the histograms' bounds: cannot fail.
                let _ = w.current.record_n(value, n);
                let _ = total.record_n(value, n);
                *c = 0;
            }
        }
        self.recorded = 0;
    }
}

/// The length of the recent-latency window.
pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
struct Window {
    started: std::time::Instant,
    current: Histogram<u64>,
    previous: Histogram<u64>,
}

/// A worker's published histogram, read by `/stats`, `/metrics` and the SIGUSR1 dump.
#[derive(Debug)]
pub struct SharedLatency {
    total: Mutex<Histogram<u64>>,
    window: Mutex<Window>,
}

impl Default for SharedLatency {
    fn default() -> Self {
        SharedLatency {
            total: Mutex::new(new_histogram()),
            window: Mutex::new(Window {
                started: std::time::Instant::now(),
                current: new_histogram(),
                previous: new_histogram(),
            }),
        }
    }
}

impl SharedLatency {
    /// Adds the histogram since start into `into`.
    pub fn merge_into(&self, into: &mut Histogram<u64>) {
        let h = self.total.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = into.add(&*h);
    }

    /// Adds the last complete [`WINDOW`] into `into`.
    pub fn merge_recent_into(&self, into: &mut Histogram<u64>) {
        let w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = into.add(&w.previous);
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Serialize, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    /// Deliveries recorded.
    pub count: u64,
    /// Mean, ms.
    pub mean: f64,
    /// Median, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// 99.9th percentile, ms.
    pub p999: f64,
    /// Maximum, ms.
    pub max: f64,
}

/// An empty histogram with the standard bounds.
pub fn empty() -> Histogram<u64> {
    new_histogram()
}

/// Summarises a histogram of µs values in ms.
pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    let ms = |us: u64| us as f64 / 1_000.0;
    LatencySummary {
        count: h.len(),
        mean: h.mean() / 1_000.0,
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_publish_merge_summarize() {
        let shared = SharedLatency::default();
        let mut r = LatencyRecorder::default();
        for i in 1..=1000u64 {
            r.record_ns(i * 1_000_000); // 1..1000 ms
        }
        r.publish(&shared);
        r.record_ns(5); // below 1 µs: clamped to 1 µs
        r.publish(&shared);
        let mut all = empty();
        shared.merge_into(&mut all);
        let s = summarize(&all);
        assert_eq!(s.count, 1001);
        // Two significant figures: within 1%.
        assert!((s.p50 - 500.0).abs() < 5.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() < 10.0, "{s:?}");
        assert!((s.max - 1000.0).abs() < 10.0, "{s:?}");
        assert_eq!(summarize(&empty()), LatencySummary::default());
    }

    #[test]
    fn the_recent_window_holds_the_last_complete_second() {
        let shared = SharedLatency::default();
        let mut r = LatencyRecorder::default();
        r.record_ns(2_000_000);
        r.publish(&shared);
        let recent = |shared: &SharedLatency| {
            let mut h = empty();
            shared.merge_recent_into(&mut h);
            summarize(&h)
        };
        // Still in the current window: nothing complete yet.
        assert_eq!(recent(&shared).count, 0);
        std::thread::sleep(WINDOW);
        r.record_ns(3_000_000);
        r.publish(&shared);
        let s = recent(&shared);
        assert_eq!(s.count, 1, "{s:?}");
        assert!((s.max - 2.0).abs() < 0.05, "{s:?}");
        // An idle second empties it.
        std::thread::sleep(WINDOW);
        r.publish(&shared);
        assert_eq!(recent(&shared).count, 1, "the 3 ms sample's window");
        std::thread::sleep(WINDOW);
        r.publish(&shared);
        assert_eq!(recent(&shared).count, 0);
    }

    #[test]
    fn buckets_are_ordered_and_within_two_percent() {
        let mut last = 0;
        for us in [
            1u64, 2, 50, 127, 128, 129, 200, 1_000, 4_095, 4_096, 123_457, 59_999_999, MAX_US,
        ] {
            let b = bucket(us);
            assert!(b >= last && b < COUNTERS, "{us}");
            last = b;
            let v = bucket_value(b) as f64;
            assert!(
                (v - us as f64).abs() <= us as f64 * 0.02 + 0.5,
                "{us} -> {v}"
            );
        }
    }
}
