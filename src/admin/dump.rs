//! The SIGUSR1 stats dump: the same figures as `/stats`, as readable log lines.

use super::health;
use crate::shared::Shared;

/// Renders the dump as lines (the caller logs each one).
pub fn lines(shared: &Shared) -> Vec<String> {
    let s = shared.stats.snapshot();
    let h = health::check(shared, &s);
    let d = &s.delivery;
    let l = &s.latency_ms;
    let c = &s.closed;
    let mut out = vec![
        format!(
            "stats dump: status {:?}{}, uptime {} s, resident memory {} MiB",
            h.status,
            if h.reasons.is_empty() { String::new() } else { format!(" ({})", h.reasons.join("; ")) },
            s.uptime,
            s.resident_memory_bytes / (1024 * 1024)
        ),
        format!(
            "  connections: {} open ({} sockets), {} accepted, {} filters, avg duration {} ms",
            s.active_connections, s.open_sockets, s.total_connections, s.total_subscriptions,
            s.average_connection_duration
        ),
        format!(
            "  ingest: {} accepted ({} publishers, {} feed), {} rejected, {} streams, {} publishers connected",
            s.messages_accepted, s.accepted_from_publishers, s.accepted_from_feed, s.messages_rejected,
            s.streams, s.publishers
        ),
        format!(
            "  delivery: {} routed, {} written, {} conflated, {} dropped slow, {} dropped on close, {} pending ({} bytes)",
            d.routed, d.written, d.conflated, d.dropped_slow_consumer, d.dropped_on_close, d.pending,
            d.pending_bytes
        ),
        format!(
            "  losses: {} dropped for full worker channels, {} slow disconnects, {} memory sheds",
            s.dropped_channel_full, d.disconnected_slow, d.memory_shed
        ),
        format!(
            "  latency ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} (n={})",
            l.p50, l.p90, l.p99, l.p999, l.max, l.count
        ),
        format!(
            "  writes: {} socket writes, {} frames, {} bytes; {} pings",
            s.write_syscalls, s.frames_written, s.bytes_written, s.pings_sent
        ),
        format!(
            "  closed: {} total, {} heartbeat, {} handshake, {} close-timeout, {} lifetime, {} shutdown, {} protocol, {} rate-limit, {} io",
            c.total, c.heartbeat_timeout, c.handshake_timeout, c.close_timeout, c.lifetime, c.shutdown,
            c.protocol, c.rate_limit, c.io_error
        ),
        format!("  errors: {} ({})", s.errors_encountered, s
            .errors_by_code
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")),
    ];
    for w in &s.workers {
        out.push(format!(
            "  worker {}: {} connections, {} routed, {} socket writes ({}), {} loop turns, {} pending bytes, p99 {:.3} ms",
            w.worker, w.active_connections, w.messages_forwarded, w.write_syscalls,
            if w.io_uring { "io_uring" } else { "plain calls" }, w.loop_turns,
            w.pending_bytes, w.latency_ms.p99
        ));
    }
    out
}
