//! The hand-off from ingest to workers: one bounded crossbeam channel per worker plus that
//! worker's mio `Waker`, woken once per batch (a "notified" flag stops redundant wakes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::routing::{StreamId, StreamKey};

/// A sequenced data message, already encoded as a WebSocket frame shared by every subscriber.
#[derive(Debug, Clone)]
pub struct DataMsg {
    /// The stream's dense id.
    pub stream: StreamId,
    /// The stream's identity (workers need it when the stream is new to them).
    pub key: Arc<StreamKey>,
    /// The stream's sequence number.
    pub seq: u64,
    /// The complete frame.
    pub frame: Bytes,
    /// When the gateway accepted it ([`crate::clock::mono_ns`]), for delivery latency.
    pub ingest_ns: u64,
    /// Messages of this stream right before it that never reached this node (seqs skipped on
    /// the bus); 0 for local sources.
    pub missed: u64,
}

/// What a worker receives from outside its loop.
#[derive(Debug, Clone)]
pub enum WorkerMsg {
    /// Fan this message out.
    Data(DataMsg),
    /// Fault injection for tests and drills: block the worker's loop this long.
    Stall(std::time::Duration),
    /// Write every connection's pending output now (`POST /flush`) and report.
    Flush(Sender<FlushReport>),
    /// A new epoch began (the bus's sequence was reset): forget every stream's seq and
    /// history and close every subscriber with 1012 so that it subscribes again.
    EpochReset,
    /// Close connection `conn` of this worker (a newer connection of its user replaced it).
    Replace {
        /// Connection id.
        conn: u64,
    },
}

/// What a worker wrote for a `Flush` request.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct FlushReport {
    /// Connections written to.
    pub connections: u64,
    /// Frames written in full.
    pub frames: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// The sending end of one worker's inbox.
#[derive(Debug, Clone)]
pub struct WorkerLink {
    tx: Sender<WorkerMsg>,
    waker: Arc<mio::Waker>,
    notified: Arc<AtomicBool>,
}

/// The receiving end, owned by the worker.
#[derive(Debug)]
pub struct WorkerInbox {
    /// Messages.
    pub rx: Receiver<WorkerMsg>,
    notified: Arc<AtomicBool>,
}

/// Creates a worker's inbox of `capacity` messages, woken through `waker`.
pub fn inbox(capacity: usize, waker: Arc<mio::Waker>) -> (WorkerLink, WorkerInbox) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let notified = Arc::new(AtomicBool::new(false));
    (
        WorkerLink {
            tx,
            waker,
            notified: notified.clone(),
        },
        WorkerInbox { rx, notified },
    )
}

impl WorkerLink {
    /// Queues without blocking; `false` when the channel is full or the worker is gone.
    #[inline]
    pub fn try_send(&self, msg: WorkerMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues a message that must not be lost to a full channel, waiting up to a second for
    /// room (a worker drains its inbox every loop turn). Returns whether it was queued.
    pub fn send_blocking(&self, msg: WorkerMsg) -> bool {
        self.tx
            .send_timeout(msg, std::time::Duration::from_secs(1))
            .is_ok()
    }

    /// Wakes the worker unless a wake is already pending. Call once per batch.
    pub fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            // A failed wake means the worker's poll is gone (it is shutting down).
            let _ = self.waker.wake();
        }
    }

    /// Wakes the worker unconditionally (shutdown, control requests).
    pub fn wake_now(&self) {
        let _ = self.waker.wake();
    }
}

impl WorkerInbox {
    /// Marks a wake as pending, so that senders skip the waker: for a worker that is about to
    /// drain its own inbox anyway (it serves the ingest listener itself). Call
    /// [`Self::rearm`] before that drain.
    pub fn hold_wakes(&self) {
        self.notified.store(true, Ordering::Release);
    }

    /// Clears the notified flag; call before draining so a send after the drain wakes again.
    pub fn rearm(&self) {
        self.notified.store(false, Ordering::Release);
    }
}
