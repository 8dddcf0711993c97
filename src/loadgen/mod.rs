//! The load tool (`tickfan bench`) and the baseline server it compares against
//! (`tickfan bench-baseline`): named scenarios, a mio-based load generator, and /proc readings
//! of the server under test. See docs/benchmarks.md.

pub mod baseline;
pub mod run;
pub mod scenario;
pub mod wire;

pub use run::{run, Report, Target};
pub use scenario::Scenario;

/// A readable table of a report.
pub fn table(r: &Report) -> String {
    let mut out = format!("scenario {}\n", r.scenario);
    let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<28} {v}\n"));
    row(
        "subscribers",
        format!("{} of {} connected", r.connected, r.subscribers),
    );
    row(
        "handshakes",
        format!(
            "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            r.handshakes_per_sec, r.handshake_ms.p50, r.handshake_ms.p99
        ),
    );
    if r.rss_per_connection_bytes > 0.0 {
        row(
            "server RSS per connection",
            format!("{:.0} bytes", r.rss_per_connection_bytes),
        );
    }
    if r.published > 0 {
        row(
            "published",
            format!("{} ({:.0}/s)", r.published, r.publish_rate),
        );
        row(
            "delivered / expected",
            format!(
                "{} / {} ({:.0}/s)",
                r.delivered, r.expected, r.deliveries_per_sec
            ),
        );
        row(
            "lost, gaps, duplicates",
            format!("{}, {}, {}", r.lost, r.gaps, r.duplicates),
        );
        if r.closed_during_run > 0 {
            row(
                "subscribers closed in run",
                format!(
                    "{} (their later messages count as lost)",
                    r.closed_during_run
                ),
            );
        }
        let l = &r.latency_ms;
        row(
            "latency ms",
            format!(
                "p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
                l.p50, l.p90, l.p99, l.p999, l.max
            ),
        );
        row(
            "server CPU s (user, system)",
            format!("{:.2}, {:.2}", r.server_cpu_user_s, r.server_cpu_system_s),
        );
        row(
            "server CPU per delivery",
            format!(
                "{:.3} µs user, {:.3} µs total",
                r.user_us_per_delivery, r.total_us_per_delivery
            ),
        );
    }
    row(
        "server RSS",
        format!("{:.1} MiB", r.server_rss_bytes as f64 / (1024.0 * 1024.0)),
    );
    out
}
