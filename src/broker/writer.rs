//! The ingest side of the bus: messages accepted on this node are queued to one writer thread
//! that sequences and publishes them in Redis in batches (one script call per batch).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{info, warn};

use super::envelope::{self, Outgoing};
use super::{connect, sleep_unless_draining};
use crate::backoff::Backoff;
use crate::config::BusConfig;
use crate::protocol::publish::PublishMsg;
use crate::shared::Shared;
use crate::stats::sources::{BusStats, LinkState};

/// Messages sent to Redis in one script call, at most.
pub const MAX_BATCH: usize = 512;

/// Why the bus refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The writer is not connected to Redis.
    Down,
    /// The queue to the writer is full.
    QueueFull,
}

/// The handle sources use to put messages on the bus (cheap to clone).
#[derive(Debug, Clone)]
pub struct Forwarder {
    tx: Sender<Outgoing>,
    stats: Arc<BusStats>,
}

impl Forwarder {
    /// Queues one message for the bus, or says why not (and counts it).
    pub fn forward(&self, msg: &PublishMsg<'_>, now_ms: u64) -> Result<(), Refused> {
        if self.stats.writer.get() != LinkState::Up {
            self.stats.lost_bus_down.inc();
            return Err(Refused::Down);
        }
        match self.tx.try_send(envelope::encode(msg, now_ms)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.stats.lost_queue_full.inc();
                Err(Refused::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.lost_bus_down.inc();
                Err(Refused::Down)
            }
        }
    }
}

/// Creates the forwarder and the writer's receiving end.
pub fn channel(cfg: &BusConfig, stats: Arc<BusStats>) -> (Forwarder, Receiver<Outgoing>) {
    let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity);
    (Forwarder { tx, stats }, rx)
}

/// The writer thread: runs until every forwarder is gone (the sources stopped) or the server
/// stops; reconnects with backoff; a batch lost in a failed write is counted.
pub fn run(
    shared: Arc<Shared>,
    cfg: BusConfig,
    rx: Receiver<Outgoing>,
    mut con: Option<redis::Connection>,
) {
    let stats = shared.stats.bus.clone();
    let script = redis::Script::new(envelope::SEQUENCE_SCRIPT);
    let key = envelope::seq_key(&cfg.channel_prefix);
    let mut backoff = Backoff::new(
        cfg.reconnect_min_ms,
        cfg.reconnect_max_ms,
        crate::backoff::seed(),
    );
    let mut ever_up = con.is_some();
    let mut batch: Vec<Outgoing> = Vec::with_capacity(MAX_BATCH);
    loop {
        if shared.is_stopped() {
            break;
        }
        if con.is_none() {
            match connect(&cfg) {
                Ok(c) => {
                    if ever_up {
                        stats.reconnects.inc();
                    }
                    ever_up = true;
                    info!(
                        "bus writer: connected to {}",
                        super::redacted(&cfg.redis_url)
                    );
                    stats.writer.set(LinkState::Up);
                    backoff.reset();
                    con = Some(c);
                }
                Err(e) => {
                    stats.writer.set(LinkState::Down);
                    let wait = backoff.next_delay();
                    let msg = format!("bus writer: cannot connect: {e}; retry in {wait:?}");
                    warn!("{msg}");
                    stats.error(msg);
                    // Whatever was queued before the loss cannot be written in order: count it.
                    let n = rx.try_iter().count() as u64;
                    stats.lost_bus_down.add(n);
                    if shared.ingest_draining() {
                        break;
                    }
                    sleep_unless_draining(&shared, wait);
                    continue;
                }
            }
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        }
        batch.extend(rx.try_iter().take(MAX_BATCH - 1));
        let mut inv = script.prepare_invoke();
        inv.key(&key)
            .arg(crate::shared::new_epoch())
            .arg(&cfg.channel_prefix);
        for m in &batch {
            inv.arg(&m.stream).arg(&m.rest);
        }
        let Some(c) = con.as_mut() else { continue };
        match inv.invoke::<u64>(c) {
            Ok(_) => stats.published.add(batch.len() as u64),
            Err(e) => {
                stats.lost_bus_down.add(batch.len() as u64);
                stats.writer.set(LinkState::Down);
                stats.last_down_ms.set(crate::shared::now_ms());
                let msg = format!(
                    "bus writer: lost {} messages, write failed: {e}",
                    batch.len()
                );
                shared.record_error(msg.clone());
                stats.error(msg);
                con = None;
            }
        }
        batch.clear();
    }
    stats.writer.set(LinkState::Off);
    info!("bus writer stopped");
}
