//! A worker's stream → subscribers index and each connection's subscriptions, kept in step so
//! that a data message costs only its subscribers, and each reaches a connection once.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::candidates::Candidates;
use super::filter::{Filter, StreamKey};
use crate::config::Policy;

/// Dense stream number assigned by the sequencer (0, 1, 2, ...).
pub type StreamId = u32;

/// One known stream and the connections (slab keys) that receive it.
#[derive(Debug)]
pub struct StreamEntry {
    /// The stream's identity.
    pub key: Arc<StreamKey>,
    /// Slab keys of subscribed connections, each once.
    pub subscribers: Vec<usize>,
    /// Backpressure policy of the stream's data type.
    pub policy: Policy,
    /// The last seq this worker received (to see gaps from a full channel).
    pub last_seq: u64,
    /// The most recent messages, oldest first (snapshots and resume).
    pub history: VecDeque<HistoryEntry>,
}

/// One message in a stream's history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// Its seq.
    pub seq: u64,
    /// When the worker received it (worker clock, ms).
    pub at_ms: u64,
    /// The data frame (shared with every queue it went to).
    pub frame: Bytes,
}

/// Every stream the worker has seen, indexed by [`StreamId`], and every filter its connections
/// hold, by symbol (for streams not seen yet).
#[derive(Debug, Default)]
pub struct StreamTable {
    entries: Vec<Option<StreamEntry>>,
    candidates: Candidates,
}

impl StreamTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of a known stream.
    #[inline]
    pub fn get(&self, id: StreamId) -> Option<&StreamEntry> {
        self.entries.get(id as usize).and_then(Option::as_ref)
    }

    /// Whether the stream is known.
    #[inline]
    pub fn contains(&self, id: StreamId) -> bool {
        self.get(id).is_some()
    }

    /// Adds a stream seen for the first time; `subscribers` are the connections whose filters
    /// match it.
    pub fn insert(
        &mut self,
        id: StreamId,
        key: Arc<StreamKey>,
        subscribers: Vec<usize>,
        policy: Policy,
    ) {
        let i = id as usize;
        if self.entries.len() <= i {
            self.entries.resize_with(i + 1, || None);
        }
        self.entries[i] = Some(StreamEntry {
            key,
            subscribers,
            policy,
            last_seq: 0,
            history: VecDeque::new(),
        });
    }

    /// Appends a message to the stream's history, keeping at most `size` entries and none
    /// older than `ttl_ms` (0: no age limit). Returns (bytes added, bytes removed).
    pub fn record(
        &mut self,
        id: StreamId,
        entry: HistoryEntry,
        size: usize,
        ttl_ms: u64,
    ) -> (usize, usize) {
        let Some(Some(e)) = self.entries.get_mut(id as usize) else {
            return (0, 0);
        };
        if size == 0 {
            return (0, 0);
        }
        let now = entry.at_ms;
        let added = entry.frame.len();
        e.history.push_back(entry);
        let mut removed = 0;
        while e.history.len() > size
            || (ttl_ms > 0
                && e.history
                    .front()
                    .is_some_and(|h| now.saturating_sub(h.at_ms) > ttl_ms))
        {
            if let Some(old) = e.history.pop_front() {
                removed += old.frame.len();
            }
        }
        (added, removed)
    }

    /// Forgets every stream's last seq and history (a new epoch); returns the bytes freed.
    pub fn reset_seqs(&mut self) -> usize {
        let mut freed = 0;
        for e in self.entries.iter_mut().flatten() {
            e.last_seq = 0;
            freed += e.history.drain(..).map(|h| h.frame.len()).sum::<usize>();
        }
        freed
    }

    /// Records that `seq` of stream `id` arrived; returns how many messages before it never
    /// arrived (0 without a gap).
    pub fn note_seq(&mut self, id: StreamId, seq: u64) -> u64 {
        let Some(Some(e)) = self.entries.get_mut(id as usize) else {
            return 0;
        };
        let gap = if e.last_seq > 0 {
            seq.saturating_sub(e.last_seq + 1)
        } else {
            0
        };
        e.last_seq = e.last_seq.max(seq);
        gap
    }

    /// The connections that may receive a new stream of `symbol` (ascending, each once): those
    /// holding a filter that names the symbol or matches any. The caller checks each one's
    /// filters ([`Subscriptions::matches`]); a new stream costs its candidates, not every
    /// connection of the worker.
    pub fn candidates(&self, symbol: &str) -> Vec<usize> {
        self.candidates.for_symbol(symbol)
    }

    /// Known streams in id order.
    pub fn iter(&self) -> impl Iterator<Item = (StreamId, &StreamEntry)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i as StreamId, e)))
    }

    /// Number of known streams.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    /// Whether no stream is known.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(Option::is_none)
    }

    fn add_subscriber(&mut self, id: StreamId, conn: usize) {
        if let Some(Some(e)) = self.entries.get_mut(id as usize) {
            e.subscribers.push(conn);
        }
    }

    fn remove_subscriber(&mut self, id: StreamId, conn: usize) {
        if let Some(Some(e)) = self.entries.get_mut(id as usize) {
            super::remove_one(&mut e.subscribers, conn);
        }
    }
}

/// What a subscribe did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The filter number (`f<n>`).
    pub n: u32,
    /// Whether the filter is new (false: an equal one was already held).
    pub new: bool,
    /// Known streams the connection receives because of this filter (and did not before).
    pub added: Vec<StreamId>,
}

/// Why a subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection holds the maximum number of filters.
    TooMany,
}

/// One connection's filters and the streams they currently match.
#[derive(Debug, Default)]
pub struct Subscriptions {
    filters: Vec<(u32, Filter)>,
    /// `throttleMs` of the throttled filters (by filter number); empty for most connections.
    // Boxed: 8 bytes per connection instead of 24, and most connections have no throttle.
    #[allow(clippy::box_collection)]
    throttles: Option<Box<Vec<(u32, u32)>>>,
    /// Sorted stream ids matched by at least one filter (the connection is in their
    /// subscriber lists).
    streams: Vec<StreamId>,
    next_filter: u32,
}

/// The id a client sees for filter number `n`.
pub fn filter_id(n: u32) -> String {
    format!("f{n}")
}

fn parse_filter_id(id: &str) -> Option<u32> {
    id.strip_prefix('f')?.parse().ok()
}

impl Subscriptions {
    /// Number of filters.
    pub fn filter_count(&self) -> usize {
        self.filters.len()
    }

    /// Number of matched streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Whether any filter matches `key`.
    pub fn matches(&self, key: &StreamKey) -> bool {
        self.filters.iter().any(|(_, f)| f.matches(key))
    }

    /// Adds a filter (or returns the id of an identical one already held, taking the new
    /// throttle) and subscribes the connection `conn` to every known stream it newly matches.
    pub fn subscribe(
        &mut self,
        table: &mut StreamTable,
        conn: usize,
        filter: Filter,
        throttle_ms: u32,
        max_filters: usize,
    ) -> Result<Subscribed, SubscribeError> {
        if let Some(n) = self.find(&filter) {
            self.set_throttle(n, throttle_ms);
            return Ok(Subscribed {
                n,
                new: false,
                added: Vec::new(),
            });
        }
        if self.filters.len() >= max_filters {
            return Err(SubscribeError::TooMany);
        }
        self.next_filter += 1;
        let n = self.next_filter;
        let mut added = Vec::new();
        for (id, entry) in table.iter() {
            if filter.matches(&entry.key) && self.streams.binary_search(&id).is_err() {
                added.push(id);
            }
        }
        for &id in &added {
            table.add_subscriber(id, conn);
        }
        if !added.is_empty() {
            self.streams.extend_from_slice(&added);
            self.streams.sort_unstable();
        }
        table.candidates.add(&filter, conn);
        self.filters.push((n, filter));
        self.set_throttle(n, throttle_ms);
        Ok(Subscribed {
            n,
            new: true,
            added,
        })
    }

    fn set_throttle(&mut self, n: u32, throttle_ms: u32) {
        let list = self.throttles.get_or_insert_with(Default::default);
        list.retain(|(m, _)| *m != n);
        if throttle_ms > 0 {
            list.push((n, throttle_ms));
        }
        if list.is_empty() {
            self.throttles = None;
        }
    }

    /// Whether any filter is throttled (a fast check before [`Self::throttle_for`]).
    #[inline]
    pub fn has_throttles(&self) -> bool {
        self.throttles.is_some()
    }

    /// The throttle interval for a stream: 0 when any unthrottled filter matches it, else the
    /// shortest interval of the throttled filters that do.
    #[inline]
    pub fn throttle_for(&self, key: &StreamKey) -> u32 {
        let Some(throttles) = &self.throttles else {
            return 0;
        };
        let mut best = u32::MAX;
        for (n, f) in &self.filters {
            if f.matches(key) {
                let t = throttles
                    .iter()
                    .find(|(m, _)| m == n)
                    .map_or(0, |(_, t)| *t);
                if t == 0 {
                    return 0;
                }
                best = best.min(t);
            }
        }
        if best == u32::MAX {
            0
        } else {
            best
        }
    }

    /// Finds the number of the filter equal to `filter`.
    pub fn find(&self, filter: &Filter) -> Option<u32> {
        self.filters
            .iter()
            .find(|(_, f)| f == filter)
            .map(|(n, _)| *n)
    }

    /// Finds a filter by the id a client sends (`"f3"`).
    pub fn find_id(&self, id: &str) -> Option<u32> {
        let n = parse_filter_id(id)?;
        self.filters.iter().any(|(m, _)| *m == n).then_some(n)
    }

    /// Removes filter `n` and unsubscribes `conn` from the streams no other filter matches.
    /// Returns whether the filter existed.
    pub fn unsubscribe(&mut self, table: &mut StreamTable, conn: usize, n: u32) -> bool {
        let Some(pos) = self.filters.iter().position(|(m, _)| *m == n) else {
            return false;
        };
        let (_, removed) = self.filters.remove(pos);
        table.candidates.remove(&removed, conn);
        if let Some(list) = self.throttles.as_mut() {
            list.retain(|(m, _)| *m != n);
            if list.is_empty() {
                self.throttles = None;
            }
        }
        let filters = &self.filters;
        self.streams.retain(|&id| {
            let Some(entry) = table.get(id) else {
                return false;
            };
            if !removed.matches(&entry.key) || filters.iter().any(|(_, f)| f.matches(&entry.key)) {
                return true;
            }
            table.remove_subscriber(id, conn);
            false
        });
        true
    }

    /// Records that `conn` was added to the subscribers of the new stream `id` (by the worker,
    /// when a stream first appears and [`matches`](Self::matches) said yes).
    pub fn note_new_stream(&mut self, id: StreamId) {
        match self.streams.binary_search(&id) {
            Ok(_) => {}
            Err(pos) => self.streams.insert(pos, id),
        }
    }

    /// Removes `conn` from every subscriber list (the connection is going away).
    pub fn clear(&mut self, table: &mut StreamTable, conn: usize) {
        for &id in &self.streams {
            table.remove_subscriber(id, conn);
        }
        for (_, f) in &self.filters {
            table.candidates.remove(f, conn);
        }
        self.streams = Vec::new();
        self.filters = Vec::new();
        self.throttles = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(ex: &[&str], sy: &[&str], dt: &[&str]) -> Filter {
        Filter::from_lists(ex, sy, dt)
    }

    fn table() -> StreamTable {
        let mut t = StreamTable::new();
        let p = Policy::Disconnect;
        t.insert(0, StreamKey::new("binance", "BTC", "trade"), vec![], p);
        t.insert(1, StreamKey::new("binance", "ETH", "trade"), vec![], p);
        t.insert(2, StreamKey::new("kraken", "BTC", "ticker"), vec![], p);
        t
    }

    #[test]
    fn overlapping_filters_subscribe_once_and_unsubscribe_keeps_the_rest() {
        let mut t = table();
        let mut s = Subscriptions::default();
        let a = s
            .subscribe(&mut t, 7, f(&["binance"], &[], &[]), 0, 10)
            .unwrap()
            .n;
        let sb = s
            .subscribe(&mut t, 7, f(&[], &["BTC"], &[]), 0, 10)
            .unwrap();
        // Only kraken BTC is new for the second filter: binance BTC came with the first.
        assert_eq!(sb.added, vec![2]);
        let b = sb.n;
        assert_eq!(t.get(0).unwrap().subscribers, vec![7]);
        assert_eq!(t.get(2).unwrap().subscribers, vec![7]);
        assert_eq!(s.stream_count(), 3);
        assert!(s.unsubscribe(&mut t, 7, a));
        // BTC on binance is still matched by filter b.
        assert_eq!(t.get(0).unwrap().subscribers, vec![7]);
        assert!(t.get(1).unwrap().subscribers.is_empty());
        assert!(s.unsubscribe(&mut t, 7, b));
        assert!(!s.unsubscribe(&mut t, 7, b));
        assert!(t.iter().all(|(_, e)| e.subscribers.is_empty()));
    }

    #[test]
    fn throttle_is_the_shortest_unless_an_unthrottled_filter_matches() {
        let mut t = table();
        let mut s = Subscriptions::default();
        let btc = t.get(0).unwrap().key.clone();
        let eth = t.get(1).unwrap().key.clone();
        s.subscribe(&mut t, 3, f(&["binance"], &[], &[]), 500, 10)
            .unwrap();
        s.subscribe(&mut t, 3, f(&[], &["BTC"], &["trade"]), 100, 10)
            .unwrap();
        assert_eq!((s.throttle_for(&btc), s.throttle_for(&eth)), (100, 500));
        s.subscribe(&mut t, 3, f(&[], &["ETH"], &[]), 0, 10)
            .unwrap();
        assert_eq!(s.throttle_for(&eth), 0);
    }

    #[test]
    fn seq_gaps_are_reported() {
        let mut t = table();
        assert_eq!(t.note_seq(0, 1), 0);
        assert_eq!(t.note_seq(0, 2), 0);
        assert_eq!(t.note_seq(0, 5), 2);
        assert_eq!(t.note_seq(9, 5), 0);
    }

    #[test]
    fn identical_filter_returns_the_same_id_and_limits_apply() {
        let mut t = table();
        let mut s = Subscriptions::default();
        let first = s
            .subscribe(&mut t, 1, f(&["kraken"], &[], &[]), 0, 1)
            .unwrap();
        let again = s
            .subscribe(&mut t, 1, f(&["kraken"], &["*"], &[]), 100, 1)
            .unwrap();
        assert_eq!(
            (first.n, first.new, again.n, again.new),
            (again.n, true, 1, false)
        );
        // The repeated subscribe set a throttle on the filter.
        assert_eq!(s.throttle_for(&t.get(2).unwrap().key), 100);
        assert_eq!(
            s.subscribe(&mut t, 1, f(&[], &[], &[]), 0, 1),
            Err(SubscribeError::TooMany)
        );
        assert_eq!(s.find_id("f1"), Some(1));
        assert_eq!(s.find_id("f2"), None);
        assert_eq!(s.find_id("x"), None);
        s.clear(&mut t, 1);
        assert!(t.get(2).unwrap().subscribers.is_empty());
    }

    #[test]
    fn new_stream_candidates_cover_every_matching_connection() {
        // Random subscribes, unsubscribes and closes over 40 connections; after each step, for
        // streams the table has not seen, the candidates' matches are exactly the connections
        // whose filters match.
        let names = ["BTC", "ETH", "SOL", "XRP"];
        let exchanges = ["binance", "kraken"];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut t = StreamTable::new();
        let mut conns: Vec<Subscriptions> = (0..40).map(|_| Subscriptions::default()).collect();
        for _ in 0..2_000 {
            let c = next(conns.len());
            match next(10) {
                0 => conns[c].clear(&mut t, c),
                1 | 2 => {
                    let held: Vec<u32> = conns[c].filters.iter().map(|(n, _)| *n).collect();
                    if !held.is_empty() {
                        let n = held[next(held.len())];
                        assert!(conns[c].unsubscribe(&mut t, c, n));
                    }
                }
                _ => {
                    let mut sy: Vec<&str> = Vec::new();
                    for _ in 0..next(3) {
                        sy.push(names[next(names.len())]);
                    }
                    let ex: &[&str] = if next(2) == 0 { &[] } else { &exchanges[..1] };
                    let _ = conns[c].subscribe(&mut t, c, f(ex, &sy, &[]), 0, 4);
                }
            }
            for sym in names.iter().chain(&["DOGE"]) {
                for ex in exchanges {
                    let key = StreamKey::new(ex, sym, "trade");
                    let all: Vec<usize> = (0..conns.len())
                        .filter(|&k| conns[k].matches(&key))
                        .collect();
                    let via: Vec<usize> = t
                        .candidates(sym)
                        .into_iter()
                        .filter(|&k| conns[k].matches(&key))
                        .collect();
                    assert_eq!(via, all, "{key:?}");
                }
            }
        }
        for (k, c) in conns.iter_mut().enumerate() {
            c.clear(&mut t, k);
        }
        assert!(t.candidates.is_empty());
    }
}
