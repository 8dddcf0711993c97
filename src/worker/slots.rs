//! The worker's session store: a slab (a vector of slots and a free list, like the `slab`
//! crate's) whose slots' addresses are known without reading them, so the delivery loops can
//! ask for a session's cache lines several steps before they touch it. With `slab::Slab`, the
//! only way to a slot's address is `get`, which reads the slot; that read, a cache miss,
//! holds up everything after it until it returns, and the prefetch gains nothing.

use std::ops::{Index, IndexMut};

use crate::prefetch::prefetch_bytes;

enum Slot<T> {
    /// Free; the next free slot's key (`usize::MAX`: none).
    Vacant(usize),
    Occupied(T),
}

/// Values under stable `usize` keys; a removed value's key is reused by a later insert.
pub struct Slots<T> {
    slots: Vec<Slot<T>>,
    /// The first free slot (`usize::MAX`: none, the next insert appends).
    free: usize,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            free: usize::MAX,
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key the next [`Self::insert`] returns.
    pub fn vacant_key(&self) -> usize {
        if self.free == usize::MAX {
            self.slots.len()
        } else {
            self.free
        }
    }

    /// Stores `value`; returns its key.
    pub fn insert(&mut self, value: T) -> usize {
        let key = self.vacant_key();
        if key == self.slots.len() {
            self.slots.push(Slot::Occupied(value));
        } else {
            match std::mem::replace(&mut self.slots[key], Slot::Occupied(value)) {
                Slot::Vacant(next) => self.free = next,
                Slot::Occupied(_) => unreachable!("the free list holds only vacant slots"),
            }
        }
        self.len += 1;
        key
    }

    /// Removes and returns the value under `key`, if there is one.
    pub fn try_remove(&mut self, key: usize) -> Option<T> {
        let slot = self.slots.get_mut(key)?;
        if !matches!(slot, Slot::Occupied(_)) {
            return None;
        }
        match std::mem::replace(slot, Slot::Vacant(self.free)) {
            Slot::Occupied(value) => {
                self.free = key;
                self.len -= 1;
                Some(value)
            }
            Slot::Vacant(_) => None,
        }
    }

    /// Removes and returns the value under `key`. Panics when there is none.
    pub fn remove(&mut self, key: usize) -> T {
        self.try_remove(key).expect("no value under this key")
    }

    /// Whether a value is stored under `key`.
    pub fn contains(&self, key: usize) -> bool {
        self.get(key).is_some()
    }

    /// The value under `key`.
    pub fn get(&self, key: usize) -> Option<&T> {
        match self.slots.get(key) {
            Some(Slot::Occupied(v)) => Some(v),
            _ => None,
        }
    }

    /// The value under `key`, mutably.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.slots.get_mut(key) {
            Some(Slot::Occupied(v)) => Some(v),
            _ => None,
        }
    }

    /// Bytes of one slot (a value and, unless it fits in a niche of the value, a tag).
    pub const SLOT_BYTES: usize = std::mem::size_of::<Slot<T>>();

    /// Asks for the cache lines of the first `bytes` of the slot under `key` without reading
    /// it (any key is fine: a hint for a vacant or out-of-range slot is only wasted).
    #[inline]
    pub fn prefetch(&self, key: usize, bytes: usize) {
        let slot = self.slots.as_ptr().wrapping_add(key);
        prefetch_bytes(slot, bytes.min(Self::SLOT_BYTES));
    }

    /// Every stored value with its key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots.iter().enumerate().filter_map(|(k, s)| match s {
            Slot::Occupied(v) => Some((k, v)),
            Slot::Vacant(_) => None,
        })
    }

    /// Every stored value with its key, in key order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(k, s)| match s {
                Slot::Occupied(v) => Some((k, v)),
                Slot::Vacant(_) => None,
            })
    }
}

impl<T> Index<usize> for Slots<T> {
    type Output = T;
    fn index(&self, key: usize) -> &T {
        self.get(key).expect("no value under this key")
    }
}

impl<T> IndexMut<usize> for Slots<T> {
    fn index_mut(&mut self, key: usize) -> &mut T {
        self.get_mut(key).expect("no value under this key")
    }
}

impl<T> crate::net::listener::ConnStore<T> for Slots<T> {
    fn vacant_key(&self) -> usize {
        Slots::vacant_key(self)
    }
    fn insert(&mut self, value: T) -> usize {
        Slots::insert(self, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_reused_after_removal() {
        let mut s = Slots::new();
        let a = s.insert("a");
        let b = s.insert("b");
        let c = s.insert("c");
        assert_eq!((a, b, c, s.len()), (0, 1, 2, 3));
        assert_eq!(s.remove(b), "b");
        assert_eq!(s.try_remove(b), None);
        assert!(!s.contains(b) && s.contains(a) && s.contains(c));
        assert_eq!(s.get(7), None);
        // The freed key comes back first, then the vector grows again.
        assert_eq!(s.vacant_key(), b);
        assert_eq!(s.insert("d"), b);
        assert_eq!(s.vacant_key(), 3);
        assert_eq!(s.insert("e"), 3);
        s.remove(a);
        s.remove(c);
        assert_eq!(s.vacant_key(), c);
        assert_eq!(s.insert("f"), c);
        assert_eq!(s.insert("g"), a);
        let all: Vec<_> = s.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(all, vec![(0, "g"), (1, "d"), (2, "f"), (3, "e")]);
        for (_, v) in s.iter_mut() {
            *v = "x";
        }
        assert_eq!(s[3], "x");
        assert_eq!(s.len(), 4);
        assert!(!s.is_empty());
    }

    #[test]
    fn prefetch_of_any_key_changes_nothing() {
        let mut s = Slots::new();
        for i in 0..10u64 {
            s.insert([i; 20]);
        }
        s.remove(3);
        for key in [0, 3, 9, 10, 1_000_000, usize::MAX] {
            s.prefetch(key, usize::MAX);
        }
        assert_eq!(s.len(), 9);
        assert_eq!(s[9][19], 9);
        let empty: Slots<u8> = Slots::new();
        empty.prefetch(0, 64);
    }
}
