//! The sequencer: gives each stream a dense id and its `seq`, encodes each data message once,
//! and hands it to every worker. One instance, behind a mutex taken once per batch, so that
//! every source shares one order per stream.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::bus::{DataMsg, WorkerLink, WorkerMsg};
use crate::protocol::outbound;
use crate::protocol::publish::PublishMsg;
use crate::routing::{StreamId, StreamKey};
use crate::stats::IngestStats;

/// The stream map's hash: a multiply-rotate over 8-byte words (as rustc's `FxHasher`), a
/// tenth of SipHash's instructions per lookup. It does not resist chosen collisions; the keys
/// come from authenticated publishers and the map holds at most `limits.max_streams`.
#[derive(Default)]
struct StreamHasher(u64);

impl Hasher for StreamHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug)]
struct StreamState {
    id: StreamId,
    last_seq: u64,
    prefix: Box<[u8]>,
    key: Arc<StreamKey>,
}

/// Why a message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchError {
    /// It would create a stream past `limits.max_streams`.
    TooManyStreams,
    /// Its bus-assigned seq is not newer than the last one of its stream (a duplicate or a
    /// late message): dropped.
    Stale,
}

/// Sequences and fans out data messages.
#[derive(Debug)]
pub struct Dispatcher {
    streams: HashMap<Box<str>, StreamState, BuildHasherDefault<StreamHasher>>,
    workers: Vec<WorkerLink>,
    stats: Arc<IngestStats>,
    max_streams: usize,
    lookup: String,
    pending_wake: bool,
}

impl Dispatcher {
    /// A dispatcher feeding `workers`.
    pub fn new(workers: Vec<WorkerLink>, stats: Arc<IngestStats>, max_streams: usize) -> Self {
        Dispatcher {
            streams: HashMap::default(),
            workers,
            stats,
            max_streams,
            lookup: String::new(),
            pending_wake: false,
        }
    }

    /// Sequences one message and queues it on every worker. Returns its `seq`. Call
    /// [`wake_workers`](Self::wake_workers) after the batch.
    pub fn publish(&mut self, msg: &PublishMsg<'_>, now_ms: u64) -> Result<u64, DispatchError> {
        self.publish_at(msg, None, now_ms)
    }

    /// Like [`publish`](Self::publish), with the seq assigned before the bus when given: a
    /// seq that skips ahead counts the skipped messages as missed (`bus_gap`), one that is
    /// not newer is refused as [`DispatchError::Stale`].
    pub fn publish_at(
        &mut self,
        msg: &PublishMsg<'_>,
        assigned: Option<u64>,
        now_ms: u64,
    ) -> Result<u64, DispatchError> {
        self.lookup.clear();
        self.lookup.push_str(&msg.exchange);
        self.lookup.push('\0');
        self.lookup.push_str(&msg.symbol);
        self.lookup.push('\0');
        self.lookup.push_str(&msg.data_type);
        let state = match self.streams.get_mut(self.lookup.as_str()) {
            Some(s) => s,
            None => {
                if self.streams.len() >= self.max_streams {
                    return Err(DispatchError::TooManyStreams);
                }
                let key = StreamKey::new(&msg.exchange, &msg.symbol, &msg.data_type);
                let state = StreamState {
                    id: self.streams.len() as StreamId,
                    last_seq: 0,
                    prefix: outbound::data_prefix(&key),
                    key,
                };
                self.stats.streams.inc();
                self.streams
                    .entry(self.lookup.as_str().into())
                    .or_insert(state)
            }
        };
        let (seq, missed) = match assigned {
            None => (state.last_seq + 1, 0),
            Some(seq) if seq <= state.last_seq => {
                self.stats.bus_stale.inc();
                return Err(DispatchError::Stale);
            }
            // The first message of a stream on this node sets where it starts.
            Some(seq) if state.last_seq == 0 => (seq, 0),
            Some(seq) => (seq, seq - state.last_seq - 1),
        };
        if missed > 0 {
            self.stats.bus_gap_messages.add(missed);
        }
        state.last_seq = seq;
        let frame = outbound::data_frame(&state.prefix, seq, msg.ts.unwrap_or(now_ms), msg.data);
        let data = DataMsg {
            stream: state.id,
            key: state.key.clone(),
            seq,
            frame,
            ingest_ns: crate::clock::mono_ns(),
            missed,
        };
        for w in &self.workers {
            if !w.try_send(WorkerMsg::Data(data.clone())) {
                self.stats.dropped_channel_full.inc();
                self.stats.last_channel_drop_ms.set(now_ms);
            }
        }
        self.stats.messages_accepted.inc();
        self.stats.last_accept_ms.set(now_ms);
        self.pending_wake = true;
        Ok(seq)
    }

    /// Wakes every worker that has new messages (once per batch).
    pub fn wake_workers(&mut self) {
        if std::mem::take(&mut self.pending_wake) {
            for w in &self.workers {
                w.wake();
            }
        }
    }

    /// A new epoch: every stream starts again from the next seq the bus gives, and every
    /// worker forgets its history and closes its subscribers (1012) so they subscribe again.
    pub fn reset_epoch(&mut self) {
        for s in self.streams.values_mut() {
            s.last_seq = 0;
        }
        for w in &self.workers {
            // A reset must not be lost to a full channel: wait for room.
            w.send_blocking(WorkerMsg::EpochReset);
            w.wake_now();
        }
    }

    /// Number of known streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn msg<'a>(sym: &'a str, data: &'a str) -> PublishMsg<'a> {
        PublishMsg {
            exchange: Cow::Borrowed("x"),
            symbol: Cow::Borrowed(sym),
            data_type: Cow::Borrowed("trade"),
            ts: Some(1),
            data,
        }
    }

    #[test]
    fn seq_per_stream_and_stream_limit() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (link, inbox) = crate::bus::inbox(2, waker);
        let stats = Arc::new(IngestStats::default());
        let mut d = Dispatcher::new(vec![link], stats.clone(), 2);
        assert_eq!(d.publish(&msg("A", "1"), 0), Ok(1));
        assert_eq!(d.publish(&msg("B", "1"), 0), Ok(1));
        assert_eq!(d.publish(&msg("A", "2"), 0), Ok(2));
        assert_eq!(
            d.publish(&msg("C", "1"), 0),
            Err(DispatchError::TooManyStreams)
        );
        // The channel holds 2: the third message was counted as dropped.
        assert_eq!(stats.dropped_channel_full.get(), 1);
        assert_eq!(stats.messages_accepted.get(), 3);
        let Ok(WorkerMsg::Data(first)) = inbox.rx.try_recv() else {
            panic!("no data")
        };
        assert_eq!((first.stream, first.seq), (0, 1));
        d.wake_workers();
    }

    #[test]
    fn bus_seqs_count_gaps_and_refuse_stale() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (link, inbox) = crate::bus::inbox(16, waker);
        let stats = Arc::new(IngestStats::default());
        let mut d = Dispatcher::new(vec![link], stats.clone(), 8);
        // A node joining mid-stream starts where the bus is.
        assert_eq!(d.publish_at(&msg("A", "1"), Some(40), 0), Ok(40));
        assert_eq!(d.publish_at(&msg("A", "1"), Some(41), 0), Ok(41));
        assert_eq!(
            d.publish_at(&msg("A", "1"), Some(41), 0),
            Err(DispatchError::Stale)
        );
        assert_eq!(d.publish_at(&msg("A", "1"), Some(45), 0), Ok(45));
        assert_eq!(stats.bus_gap_messages.get(), 3);
        assert_eq!(stats.bus_stale.get(), 1);
        let missed: Vec<u64> = inbox
            .rx
            .try_iter()
            .filter_map(|m| match m {
                WorkerMsg::Data(d) => Some(d.missed),
                _ => None,
            })
            .collect();
        assert_eq!(missed, vec![0, 0, 3]);
        d.reset_epoch();
        assert!(matches!(inbox.rx.try_recv(), Ok(WorkerMsg::EpochReset)));
        assert_eq!(d.publish_at(&msg("A", "1"), Some(1), 0), Ok(1));
    }
}
