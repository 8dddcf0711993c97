//! A hashed timer wheel, one per worker: O(1) insert, lazy cancellation (the owner checks on
//! expiry whether a timer still applies), and the time to the next deadline for `poll`.
//!
//! Slots are `TICK_MS` wide; a timer further away than one rotation waits in its slot and is
//! skipped until its round comes (each slot visit compares the stored deadline). A bitmap of
//! the occupied slots lets the search for the next deadline, made before every `poll`, skip
//! empty slots 64 at a time instead of reading each slot (a scan of a few hundred empty slots
//! touched dozens of cache lines per loop turn).

use std::time::Duration;

/// Width of one slot in ms.
pub const TICK_MS: u64 = 1;
/// Slots in one rotation (a power of two).
const SLOTS: usize = 4096;
/// Words of the occupied-slot bitmap.
const WORDS: usize = SLOTS / 64;

/// A timer wheel holding items of type `T`.
#[derive(Debug)]
pub struct TimerWheel<T> {
    slots: Vec<Vec<(u64, T)>>,
    /// Bit `i % 64` of word `i / 64` is set when slot `i` holds a timer.
    occupied: Box<[u64; WORDS]>,
    /// Next tick to visit: every tick before it has been expired.
    next_tick: u64,
    len: usize,
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose time starts at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: Box::new([0; WORDS]),
            next_tick: now_ms / TICK_MS,
            len: 0,
        }
    }

    /// Timers pending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `item` to fire at `deadline_ms` (a deadline already past fires at the next expiry).
    pub fn insert(&mut self, deadline_ms: u64, item: T) {
        let tick = (deadline_ms / TICK_MS).max(self.next_tick);
        let i = (tick as usize) % SLOTS;
        self.slots[i].push((deadline_ms, item));
        self.occupied[i / 64] |= 1 << (i % 64);
        self.len += 1;
    }

    /// Moves every item due at `now_ms` into `out` with its deadline (in slot order; ties in
    /// insertion order).
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<(u64, T)>) {
        let now_tick = now_ms / TICK_MS;
        if now_tick < self.next_tick {
            return;
        }
        // Visiting more than one rotation would only revisit the same slots.
        let last = now_tick.min(self.next_tick + SLOTS as u64 - 1);
        for tick in self.next_tick..=last {
            let at = (tick as usize) % SLOTS;
            if self.occupied[at / 64] & (1 << (at % 64)) == 0 {
                continue;
            }
            let slot = &mut self.slots[at];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].0 <= now_ms {
                    out.push(slot.remove(i));
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
            if slot.is_empty() {
                self.occupied[at / 64] &= !(1 << (at % 64));
            }
        }
        self.next_tick = now_tick + 1;
    }

    /// Time from `now_ms` until the earliest slot that holds a timer (an upper bound on the
    /// wait before the next expiry has work), or `None` when the wheel is empty.
    pub fn next_timeout(&self, now_ms: u64) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let offset = self.first_occupied_from((self.next_tick as usize) % SLOTS)?;
        let tick = self.next_tick + offset as u64;
        let slot = &self.slots[(tick as usize) % SLOTS];
        let min = slot.iter().map(|(d, _)| *d).min()?;
        let due = min.max(tick * TICK_MS);
        // Not due this rotation: wake at the slot anyway (cheap, and rare).
        let at = if min / TICK_MS > tick {
            tick * TICK_MS
        } else {
            due
        };
        Some(Duration::from_millis(at.saturating_sub(now_ms)))
    }

    /// How many slots after slot `start` (0 for `start` itself) the first occupied slot is, in
    /// wheel order (wrapping around), or `None` when every slot is empty.
    fn first_occupied_from(&self, start: usize) -> Option<usize> {
        let (w0, b0) = (start / 64, start % 64);
        let here = self.occupied[w0] & (!0u64 << b0);
        if here != 0 {
            return Some(w0 * 64 + here.trailing_zeros() as usize - start);
        }
        for i in 1..=WORDS {
            let w = (w0 + i) % WORDS;
            // Back at the first word: only the slots before `start` are left.
            let bits = if i == WORDS {
                self.occupied[w] & !(!0u64 << b0)
            } else {
                self.occupied[w]
            };
            if bits != 0 {
                let slot = w * 64 + bits.trailing_zeros() as usize;
                return Some((slot + SLOTS - start) % SLOTS);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expire_at<T>(w: &mut TimerWheel<T>, now: u64) -> Vec<T> {
        let mut out = Vec::new();
        w.expire(now, &mut out);
        out.into_iter().map(|(_, t)| t).collect()
    }

    /// The next deadline found by visiting every slot in turn (the wheel's first form).
    fn next_timeout_by_scan<T>(w: &TimerWheel<T>, now_ms: u64) -> Option<Duration> {
        (0..SLOTS as u64).find_map(|offset| {
            let tick = w.next_tick + offset;
            let min = w.slots[(tick as usize) % SLOTS]
                .iter()
                .map(|(d, _)| *d)
                .min()?;
            let at = if min / TICK_MS > tick {
                tick * TICK_MS
            } else {
                min.max(tick * TICK_MS)
            };
            Some(Duration::from_millis(at.saturating_sub(now_ms)))
        })
    }

    #[test]
    fn the_bitmap_finds_what_a_scan_of_every_slot_finds() {
        let mut w = TimerWheel::new(5_000);
        let mut now = 5_000u64;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut out = Vec::new();
        for step in 0..20_000 {
            match next() % 4 {
                // Near, far (beyond a rotation) and past deadlines.
                0 | 1 => w.insert(now + next() % 300, step),
                2 => w.insert(now + next() % 20_000, step),
                _ => {
                    now += next() % 70;
                    out.clear();
                    w.expire(now, &mut out);
                    assert!(out.iter().all(|(d, _)| *d <= now));
                }
            }
            assert_eq!(
                w.next_timeout(now),
                next_timeout_by_scan(&w, now),
                "step {step}"
            );
            if step % 1_000 == 0 {
                for (i, slot) in w.slots.iter().enumerate() {
                    let bit = w.occupied[i / 64] & (1 << (i % 64)) != 0;
                    assert_eq!(bit, !slot.is_empty(), "slot {i}");
                }
            }
        }
        // Everything fires in the end, and the bitmap is empty again.
        out.clear();
        w.expire(now + 100_000, &mut out);
        let mut guard = 0;
        while !w.is_empty() && guard < 10 {
            now += 100_000;
            w.expire(now, &mut out);
            guard += 1;
        }
        assert!(w.is_empty());
        assert_eq!(w.next_timeout(now), None);
        assert!(w.occupied.iter().all(|&word| word == 0));
    }

    #[test]
    fn fires_in_deadline_order_and_not_early() {
        let mut w = TimerWheel::new(1000);
        w.insert(1030, "c");
        w.insert(1010, "a");
        w.insert(1020, "b");
        assert!(expire_at(&mut w, 1009).is_empty());
        assert_eq!(expire_at(&mut w, 1025), vec!["a", "b"]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.next_timeout(1025), Some(Duration::from_millis(5)));
        assert_eq!(expire_at(&mut w, 1030), vec!["c"]);
        assert!(w.is_empty());
        assert_eq!(w.next_timeout(1030), None);
    }

    #[test]
    fn past_deadlines_fire_at_the_next_expiry() {
        let mut w = TimerWheel::new(500);
        expire_at(&mut w, 600);
        w.insert(10, 1);
        // Overdue timers fire at the next tick (1 ms resolution).
        assert_eq!(w.next_timeout(600), Some(Duration::from_millis(1)));
        assert_eq!(expire_at(&mut w, 601), vec![1]);
    }

    #[test]
    fn long_delays_wait_for_their_round() {
        let mut w = TimerWheel::new(0);
        let far = 3 * SLOTS as u64 * TICK_MS + 7;
        w.insert(far, "far");
        w.insert(7, "near");
        assert_eq!(expire_at(&mut w, 7), vec!["near"]);
        // Jumping a long way in one call still fires nothing early and the far one on time.
        assert!(expire_at(&mut w, far - 1).is_empty());
        assert_eq!(expire_at(&mut w, far), vec!["far"]);
    }

    #[test]
    fn many_timers_in_one_slot() {
        let mut w = TimerWheel::new(0);
        for i in 0..10_000u32 {
            w.insert(50, i);
        }
        w.insert(50 + SLOTS as u64, 99_999);
        let out = expire_at(&mut w, 50);
        assert_eq!(out.len(), 10_000);
        assert_eq!(out[0], 0);
        assert_eq!(out[9_999], 9_999);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn lazy_cancellation_by_generation() {
        // The owner stores (key, generation); a stale generation is ignored on expiry.
        let mut w = TimerWheel::new(0);
        let mut current_gen = 1;
        w.insert(10, (7usize, 1u64));
        current_gen += 1; // "cancel" by bumping the generation
        w.insert(20, (7usize, current_gen));
        let fired: Vec<_> = expire_at(&mut w, 30)
            .into_iter()
            .filter(|&(_, g)| g == current_gen)
            .collect();
        assert_eq!(fired, vec![(7, 2)]);
    }
}
