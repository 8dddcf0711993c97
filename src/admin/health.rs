//! The health verdict: healthy, degraded or unhealthy, with the reasons, from the counters.
//!
//! Rules (also in docs/operations.md):
//! - unhealthy (HTTP 503): no worker loop has turned within `health.worker_stall_ms`, or no
//!   message was accepted within `health.max_ingest_silence_ms` (when that is not 0);
//! - degraded (HTTP 200): some worker is stalled; the process is over
//!   `backpressure.memory_limit_bytes`; a worker's channel overflowed within the last
//!   [`RECENT_DROP_MS`]; a server-side error was recorded within `health.error_window_ms`;
//!   the Redis bus is down (for what the node's role needs); or an upstream connector is down.
//!   A bus outage only degrades: when Redis itself is gone every node would otherwise leave
//!   the load balancer at once.

use serde::Serialize;

use crate::shared::{now_ms, LastError, Shared};
use crate::stats::sources::LinkState;
use crate::stats::Snapshot;

/// How long a channel overflow keeps the gateway degraded.
pub const RECENT_DROP_MS: u64 = 10_000;

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// All good.
    Healthy,
    /// Serving, with a problem worth a look.
    Degraded,
    /// Not serving properly: take it out of the load balancer.
    Unhealthy,
}

impl Status {
    /// 0, 1, 2 for the `tickfan_health_status` gauge.
    pub fn as_number(self) -> u8 {
        self as u8
    }
}

/// `performance` in the health body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Performance {
    /// Mean delivery latency (accept → socket write), ms.
    pub avg_latency: f64,
    /// 99th percentile delivery latency, ms.
    pub p99_latency: f64,
    /// Resident memory, bytes.
    pub memory_usage: u64,
}

/// The `/health` body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The verdict.
    pub status: Status,
    /// Why it is not healthy (empty when healthy).
    pub reasons: Vec<String>,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Seconds since start.
    pub uptime: u64,
    /// The last server-side error.
    pub last_error: Option<LastError>,
    /// Latency and memory.
    pub performance: Performance,
    /// Connected publishers.
    pub publishers: u64,
    /// Known streams.
    pub streams: u64,
    /// Worker threads.
    pub workers: usize,
    /// The Redis bus, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<crate::stats::sources::BusSnapshot>,
    /// Upstream exchange connectors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<crate::stats::sources::UpstreamSnapshot>,
}

/// Workers whose loop has not turned within `health.worker_stall_ms` (or that exited).
pub fn stalled_workers(shared: &Shared) -> Vec<usize> {
    let limit = shared.config().health.worker_stall_ms;
    let now = crate::clock::mono_ms();
    shared
        .stats
        .workers
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            let t = w.last_turn_ms.get();
            t == 0 || now.saturating_sub(t) > limit
        })
        .map(|(i, _)| i)
        .collect()
}

/// Judges health from a snapshot.
pub fn check(shared: &Shared, snap: &Snapshot) -> Health {
    let cfg = shared.config();
    let now = now_ms();
    let mut unhealthy = Vec::new();
    let mut degraded = Vec::new();
    let stalled = stalled_workers(shared);
    if stalled.len() == shared.stats.workers.len() {
        unhealthy.push(format!(
            "no worker loop turned within {} ms",
            cfg.health.worker_stall_ms
        ));
    } else if !stalled.is_empty() {
        degraded.push(format!(
            "workers {stalled:?} stalled for over {} ms",
            cfg.health.worker_stall_ms
        ));
    }
    let silence = cfg.health.max_ingest_silence_ms;
    if silence > 0 {
        let last = shared.stats.ingest.last_accept_ms.get();
        let since = if last == 0 {
            shared.stats.started.elapsed().as_millis() as u64
        } else {
            now.saturating_sub(last)
        };
        if since > silence {
            unhealthy.push(format!(
                "no message accepted for {since} ms (limit {silence} ms)"
            ));
        }
    }
    if shared
        .stats
        .workers
        .iter()
        .any(|w| w.memory_over_limit.get() == 1)
    {
        degraded.push(format!(
            "memory over backpressure.memory_limit_bytes ({})",
            cfg.backpressure.memory_limit_bytes
        ));
    }
    let last_drop = shared.stats.ingest.last_channel_drop_ms.get();
    if last_drop > 0 && now.saturating_sub(last_drop) < RECENT_DROP_MS {
        degraded.push("a worker's channel was full: messages dropped for its subscribers".into());
    }
    if let Some(bus) = &snap.bus {
        if bus.state != LinkState::Up {
            degraded.push(format!(
                "the bus is down (reader {:?}, writer {:?}, role {})",
                bus.reader, bus.writer, bus.role
            ));
        }
    }
    for u in &snap.upstreams {
        if u.state != LinkState::Up {
            degraded.push(format!("upstream {} is not connected", u.name));
        }
    }
    let last_error = shared.last_error();
    if let Some(e) = &last_error {
        if now.saturating_sub(e.timestamp) < cfg.health.error_window_ms {
            degraded.push(format!("recent error: {}", e.message));
        }
    }
    let status = if !unhealthy.is_empty() {
        Status::Unhealthy
    } else if !degraded.is_empty() {
        Status::Degraded
    } else {
        Status::Healthy
    };
    unhealthy.extend(degraded);
    Health {
        status,
        reasons: unhealthy,
        connections: snap.active_connections,
        uptime: snap.uptime,
        last_error,
        performance: Performance {
            avg_latency: snap.latency_ms.mean,
            p99_latency: snap.latency_ms.p99,
            memory_usage: snap.resident_memory_bytes,
        },
        publishers: snap.publishers,
        streams: snap.streams,
        workers: snap.workers.len(),
        bus: snap.bus.clone(),
        upstreams: snap.upstreams.clone(),
    }
}
