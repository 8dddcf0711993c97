//! `GET /metrics`: the snapshot in the Prometheus text exposition format (version 0.0.4).
//! Every family has HELP and TYPE lines; names are `tickfan_*`; counters end in `_total`.

use std::fmt::Write as _;

use super::health::Status;
use crate::stats::{Snapshot, WorkerSnapshot};

/// A per-worker metric: name, type, help, and its value for one worker.
type PerWorker = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerSnapshot) -> f64,
);

/// Content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metric families.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let escaped = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{escaped}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Renders the snapshot and the health verdict.
pub fn render(s: &Snapshot, status: Status) -> String {
    let mut e = Exposition {
        out: String::with_capacity(8192),
    };
    let d = &s.delivery;
    e.single("tickfan_up", "gauge", "1 while the gateway runs.", 1.0);
    e.single(
        "tickfan_health_status",
        "gauge",
        "Health verdict: 0 healthy, 1 degraded, 2 unhealthy.",
        status.as_number() as f64,
    );
    e.single(
        "tickfan_uptime_seconds",
        "gauge",
        "Seconds since start.",
        s.uptime as f64,
    );
    e.single(
        "tickfan_resident_memory_bytes",
        "gauge",
        "Resident memory of the process.",
        s.resident_memory_bytes as f64,
    );
    e.single(
        "tickfan_connections_active",
        "gauge",
        "Open WebSocket connections on the public listener.",
        s.active_connections as f64,
    );
    e.single(
        "tickfan_sockets_open",
        "gauge",
        "Open sockets on the public listener (WebSockets, handshakes, plain HTTP).",
        s.open_sockets as f64,
    );
    e.single(
        "tickfan_connections_total",
        "counter",
        "Connections accepted on the public listener.",
        s.total_connections as f64,
    );
    e.single(
        "tickfan_subscriptions_active",
        "gauge",
        "Filters held.",
        s.total_subscriptions as f64,
    );
    e.single(
        "tickfan_streams",
        "gauge",
        "Streams known.",
        s.streams as f64,
    );
    e.single(
        "tickfan_publishers_active",
        "gauge",
        "Connected publishers.",
        s.publishers as f64,
    );
    e.family(
        "tickfan_messages_accepted_total",
        "counter",
        "Data messages accepted, by source.",
    );
    e.sample(
        "tickfan_messages_accepted_total",
        &[("source", "publisher")],
        s.accepted_from_publishers as f64,
    );
    e.sample(
        "tickfan_messages_accepted_total",
        &[("source", "feed")],
        s.accepted_from_feed as f64,
    );
    e.sample(
        "tickfan_messages_accepted_total",
        &[("source", "upstream")],
        s.accepted_from_upstreams as f64,
    );
    e.single(
        "tickfan_messages_rejected_total",
        "counter",
        "Publisher messages rejected as invalid.",
        s.messages_rejected as f64,
    );
    e.single(
        "tickfan_messages_routed_total",
        "counter",
        "Data messages routed to subscriber connections (one per connection).",
        d.routed as f64,
    );
    e.single(
        "tickfan_messages_written_total",
        "counter",
        "Data messages written to subscriber sockets.",
        d.written as f64,
    );
    e.single(
        "tickfan_messages_conflated_total",
        "counter",
        "Data messages replaced by a newer one of their stream (conflate policy).",
        d.conflated as f64,
    );
    e.family(
        "tickfan_messages_dropped_total",
        "counter",
        "Data messages not delivered, by reason.",
    );
    e.sample(
        "tickfan_messages_dropped_total",
        &[("reason", "slow_consumer")],
        d.dropped_slow_consumer as f64,
    );
    e.sample(
        "tickfan_messages_dropped_total",
        &[("reason", "closed")],
        d.dropped_on_close as f64,
    );
    e.sample(
        "tickfan_messages_dropped_total",
        &[("reason", "channel_full")],
        s.dropped_channel_full as f64,
    );
    e.single(
        "tickfan_messages_pending",
        "gauge",
        "Data messages queued on connections, not yet written.",
        d.pending as f64,
    );
    e.single(
        "tickfan_pending_bytes",
        "gauge",
        "Bytes queued on connections.",
        d.pending_bytes as f64,
    );
    e.single(
        "tickfan_slow_consumer_disconnects_total",
        "counter",
        "Connections closed with 4001 by a backpressure policy.",
        d.disconnected_slow as f64,
    );
    e.single(
        "tickfan_memory_shed_total",
        "counter",
        "Connections closed with 4001 by the memory guard.",
        d.memory_shed as f64,
    );
    e.single(
        "tickfan_frames_written_total",
        "counter",
        "Frames written (data and control).",
        s.frames_written as f64,
    );
    e.single(
        "tickfan_bytes_written_total",
        "counter",
        "Bytes written to subscriber sockets.",
        s.bytes_written as f64,
    );
    e.single(
        "tickfan_write_syscalls_total",
        "counter",
        "Writes to subscriber sockets (a send or writev call, or an io_uring send entry).",
        s.write_syscalls as f64,
    );
    e.single(
        "tickfan_pings_sent_total",
        "counter",
        "Heartbeat pings sent.",
        s.pings_sent as f64,
    );
    e.single(
        "tickfan_history_bytes",
        "gauge",
        "Bytes of frames in the per-stream histories, summed over workers.",
        s.history_bytes as f64,
    );
    e.single(
        "tickfan_replayed_total",
        "counter",
        "Messages replayed on resume.",
        s.replayed as f64,
    );
    e.single(
        "tickfan_snapshots_total",
        "counter",
        "Snapshot messages sent.",
        s.snapshots as f64,
    );
    e.family(
        "tickfan_errors_total",
        "counter",
        "Error replies sent to clients, by code.",
    );
    for (code, n) in &s.errors_by_code {
        e.sample("tickfan_errors_total", &[("code", code)], *n as f64);
    }
    let c = &s.closed;
    e.family(
        "tickfan_connections_closed_total",
        "counter",
        "Connections closed, by cause.",
    );
    for (reason, n) in [
        ("heartbeat_timeout", c.heartbeat_timeout),
        ("handshake_timeout", c.handshake_timeout),
        ("close_timeout", c.close_timeout),
        ("lifetime", c.lifetime),
        ("shutdown", c.shutdown),
        ("protocol", c.protocol),
        ("rate_limit", c.rate_limit),
        ("io_error", c.io_error),
        ("restart", c.restart),
        (
            "other",
            c.total.saturating_sub(
                c.heartbeat_timeout
                    + c.handshake_timeout
                    + c.close_timeout
                    + c.lifetime
                    + c.shutdown
                    + c.protocol
                    + c.rate_limit
                    + c.io_error
                    + c.restart,
            ),
        ),
    ] {
        e.sample(
            "tickfan_connections_closed_total",
            &[("reason", reason)],
            n as f64,
        );
    }
    let l = &s.latency_ms;
    e.family(
        "tickfan_delivery_latency_seconds",
        "summary",
        "Time from accepting a message to writing it to a subscriber socket.",
    );
    for (q, v) in [
        ("0.5", l.p50),
        ("0.9", l.p90),
        ("0.99", l.p99),
        ("0.999", l.p999),
    ] {
        e.sample(
            "tickfan_delivery_latency_seconds",
            &[("quantile", q)],
            v / 1_000.0,
        );
    }
    e.sample(
        "tickfan_delivery_latency_seconds_sum",
        &[],
        l.mean * l.count as f64 / 1_000.0,
    );
    e.sample(
        "tickfan_delivery_latency_seconds_count",
        &[],
        l.count as f64,
    );
    let per_worker: [PerWorker; 4] = [
        (
            "tickfan_worker_connections",
            "gauge",
            "Open WebSocket connections per worker.",
            |w| w.active_connections as f64,
        ),
        (
            "tickfan_worker_loop_turns_total",
            "counter",
            "Event-loop turns per worker.",
            |w| w.loop_turns as f64,
        ),
        (
            "tickfan_worker_io_uring",
            "gauge",
            "1 while the worker writes through io_uring, 0 with plain send/writev calls.",
            |w| f64::from(u8::from(w.io_uring)),
        ),
        (
            "tickfan_worker_messages_routed_total",
            "counter",
            "Data messages routed per worker.",
            |w| w.messages_forwarded as f64,
        ),
    ];
    for (name, kind, help, value) in per_worker {
        e.family(name, kind, help);
        for w in &s.workers {
            e.sample(name, &[("worker", &w.worker.to_string())], value(w));
        }
    }
    sources(&mut e, s);
    e.out
}

/// The bus and the upstream connectors.
fn sources(e: &mut Exposition, s: &Snapshot) {
    use crate::stats::sources::LinkState;
    let up = |st: LinkState| if st == LinkState::Up { 1.0 } else { 0.0 };
    if let Some(b) = &s.bus {
        e.family(
            "tickfan_bus_up",
            "gauge",
            "1 when the bus connection is up, by direction (reader: edge, writer: ingest).",
        );
        e.sample("tickfan_bus_up", &[("direction", "reader")], up(b.reader));
        e.sample("tickfan_bus_up", &[("direction", "writer")], up(b.writer));
        e.family(
            "tickfan_bus_messages_total",
            "counter",
            "Messages through the bus, by direction.",
        );
        e.sample(
            "tickfan_bus_messages_total",
            &[("direction", "published")],
            b.published as f64,
        );
        e.sample(
            "tickfan_bus_messages_total",
            &[("direction", "received")],
            b.received as f64,
        );
        e.family(
            "tickfan_bus_lost_total",
            "counter",
            "Messages lost on the way through the bus, by reason.",
        );
        for (reason, n) in [
            ("bus_down", b.lost_bus_down),
            ("queue_full", b.lost_queue_full),
            ("gap", b.gap_messages),
            ("stale", b.stale),
            ("invalid", b.invalid),
        ] {
            e.sample("tickfan_bus_lost_total", &[("reason", reason)], n as f64);
        }
        e.single(
            "tickfan_bus_reconnects_total",
            "counter",
            "Bus connections made again after a loss.",
            b.reconnects as f64,
        );
        e.single(
            "tickfan_bus_epoch_changes_total",
            "counter",
            "Epoch changes adopted from the bus.",
            b.epoch_changes as f64,
        );
    }
    if s.upstreams.is_empty() {
        return;
    }
    e.family(
        "tickfan_upstream_up",
        "gauge",
        "1 while the upstream connection is open.",
    );
    for u in &s.upstreams {
        e.sample("tickfan_upstream_up", &[("upstream", &u.name)], up(u.state));
    }
    for (name, help, get) in [
        (
            "tickfan_upstream_connects_total",
            "Upstream connection attempts.",
            (|u| u.connects) as fn(&crate::stats::sources::UpstreamSnapshot) -> u64,
        ),
        (
            "tickfan_upstream_disconnects_total",
            "Upstream connections failed or lost.",
            |u| u.disconnects,
        ),
        (
            "tickfan_upstream_stale_total",
            "Upstream connections replaced after silence.",
            |u| u.stale,
        ),
        (
            "tickfan_upstream_messages_total",
            "Upstream messages accepted.",
            |u| u.messages,
        ),
        (
            "tickfan_upstream_unmapped_total",
            "Upstream messages that did not map to a stream (garbage, unknown events).",
            |u| u.unmapped,
        ),
        (
            "tickfan_upstream_refused_total",
            "Upstream messages refused by the pipeline (bus down, stream limit).",
            |u| u.refused,
        ),
    ] {
        e.family(name, "counter", help);
        for u in &s.upstreams {
            e.sample(name, &[("upstream", &u.name)], get(u) as f64);
        }
    }
}
