//! The edge side of the bus: one thread subscribed to the bus's channel patterns, feeding
//! every message, with the seq assigned in Redis, into this node's sequencer and workers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use log::{info, warn};

use super::envelope;
use super::{connect, sleep_unless_draining};
use crate::backoff::Backoff;
use crate::config::BusConfig;
use crate::ingest::{DispatchError, Dispatcher};
use crate::protocol::publish::parse_publish;
use crate::shared::{now_ms, Shared};
use crate::stats::sources::LinkState;

/// How often a blocked read wakes to check for shutdown.
const READ_TIMEOUT_MS: u64 = 250;

/// Fetches the bus's epoch, creating it when Redis has none, and adopts it. A change of epoch
/// (a Redis that lost its data, or a node that served before it reached the bus) resets every
/// stream and closes every subscriber with 1012.
pub fn adopt_epoch(
    shared: &Shared,
    cfg: &BusConfig,
    con: &mut redis::Connection,
    dispatcher: &Mutex<Dispatcher>,
) -> redis::RedisResult<()> {
    let key = envelope::seq_key(&cfg.channel_prefix);
    let _: bool = redis::cmd("HSETNX")
        .arg(&key)
        .arg(envelope::EPOCH_FIELD)
        .arg(crate::shared::new_epoch())
        .query(con)?;
    let epoch: String = redis::cmd("HGET")
        .arg(&key)
        .arg(envelope::EPOCH_FIELD)
        .query(con)?;
    change_epoch(shared, &epoch, dispatcher);
    Ok(())
}

fn change_epoch(shared: &Shared, epoch: &str, dispatcher: &Mutex<Dispatcher>) {
    let old = shared.epoch();
    let first = !shared
        .stats
        .bus
        .epoch_adopted
        .swap(true, std::sync::atomic::Ordering::AcqRel);
    if shared.set_epoch(epoch) {
        if first {
            info!("bus: adopted the bus's epoch {epoch} (was the local {old})");
        } else {
            warn!("bus: epoch {old} -> {epoch} (Redis lost its data?): streams restart, subscribers get 1012");
            shared.stats.bus.epoch_changes.inc();
        }
        dispatcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reset_epoch();
    }
}

/// The reader thread: runs until the sources stop; reconnects with backoff.
pub fn run(shared: Arc<Shared>, cfg: BusConfig, dispatcher: Arc<Mutex<Dispatcher>>) {
    let stats = shared.stats.bus.clone();
    let mut backoff = Backoff::new(
        cfg.reconnect_min_ms,
        cfg.reconnect_max_ms,
        crate::backoff::seed(),
    );
    let patterns = cfg.patterns();
    let mut ever_up = false;
    while !shared.ingest_draining() && !shared.is_stopped() {
        let result = connect(&cfg).and_then(|mut con| {
            adopt_epoch(&shared, &cfg, &mut con, &dispatcher)?;
            let mut ps = con.as_pubsub();
            for p in &patterns {
                ps.psubscribe(p)?;
            }
            ps.set_read_timeout(Some(Duration::from_millis(READ_TIMEOUT_MS)))?;
            if ever_up {
                stats.reconnects.inc();
            }
            ever_up = true;
            stats.reader.set(LinkState::Up);
            backoff.reset();
            info!(
                "bus reader: subscribed to {} on {}",
                patterns.join(", "),
                super::redacted(&cfg.redis_url)
            );
            loop {
                if shared.ingest_draining() || shared.is_stopped() {
                    return Ok(());
                }
                match ps.get_message() {
                    Ok(msg) => on_message(&shared, &dispatcher, msg.get_payload_bytes()),
                    Err(e) if e.is_timeout() => {}
                    Err(e) => return Err(e),
                }
            }
        });
        if let Err(e) = result {
            if stats.reader.get() == LinkState::Up {
                stats.last_down_ms.set(now_ms());
                shared.record_error(format!("bus reader: lost the bus: {e}"));
            }
            stats.reader.set(LinkState::Down);
            let wait = backoff.next_delay();
            let msg = format!("bus reader: {e}; retry in {wait:?}");
            warn!("{msg}");
            stats.error(msg);
            sleep_unless_draining(&shared, wait);
        }
    }
    stats.reader.set(LinkState::Off);
    info!("bus reader stopped");
}

fn on_message(shared: &Shared, dispatcher: &Mutex<Dispatcher>, payload: &[u8]) {
    let stats = &shared.stats.bus;
    let Ok(text) = std::str::from_utf8(payload) else {
        stats.invalid.inc();
        return;
    };
    let Ok(env) = envelope::header(text) else {
        stats.invalid.inc();
        return;
    };
    let max_name = shared.config().limits.max_name_bytes;
    let Ok(parsed) = parse_publish(text, max_name) else {
        stats.invalid.inc();
        return;
    };
    if let Some(epoch) = env.epoch.as_deref() {
        if *shared.epoch() != *epoch {
            change_epoch(shared, epoch, dispatcher);
        }
    }
    let now = now_ms();
    let mut d = dispatcher.lock().unwrap_or_else(PoisonError::into_inner);
    for item in &parsed {
        let Ok(msg) = item else {
            stats.invalid.inc();
            continue;
        };
        if env.seq.is_none() {
            stats.unsequenced.inc();
        }
        // A batch published straight into Redis has no seq: this node sequences it.
        let seq = if parsed.len() == 1 { env.seq } else { None };
        match d.publish_at(msg, seq, now) {
            Ok(_) => stats.received.inc(),
            Err(DispatchError::TooManyStreams) => stats.invalid.inc(),
            Err(DispatchError::Stale) => {}
        }
    }
    d.wake_workers();
}
