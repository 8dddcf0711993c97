//! Upstream exchange connectors: one thread per `[[upstream]]` entry holds exactly one
//! WebSocket connection to the exchange (a new one only after the old one is gone), sends the
//! subscribe frames, maps each message and passes it to the same pipeline as `/publish`.
//! Pings and a stale timer find dead connections; reconnects back off from 1 s to 30 s with
//! +/-30% jitter; every connect, disconnect and retry is logged with an instance id.

pub mod mapping;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use tungstenite::Message;

use crate::backoff::Backoff;
use crate::broker::sleep_unless_draining;
use crate::config::UpstreamConfig;
use crate::ingest::Sink;
use crate::protocol::publish::{check_name, PublishMsg};
use crate::shared::{now_ms, Shared};
use crate::stats::sources::{LinkState, UpstreamStats};
use mapping::Outcome;

/// How long a read blocks before the loop checks its timers.
const READ_SLICE_MS: u64 = 200;
/// At most one log line about unmapped messages per connector this often.
const UNMAPPED_LOG_EVERY_MS: u64 = 10_000;

type Socket = crate::net::client::ClientSocket;

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The server is shutting down.
    Shutdown,
    /// Nothing arrived for `stale_after_ms`.
    Stale(u64),
    /// The upstream closed or the connection failed.
    Lost(String),
}

/// Starts one connector thread per entry; returns the threads.
pub fn start(
    shared: &Arc<Shared>,
    sink: &Sink,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let entries = shared.config().upstream.clone();
    let stats: Vec<Arc<UpstreamStats>> = entries
        .iter()
        .map(|u| Arc::new(UpstreamStats::new(&u.name)))
        .collect();
    let _ = shared.stats.upstreams.set(stats.clone());
    let mut threads = Vec::new();
    for (cfg, stats) in entries.into_iter().zip(stats) {
        let (s, k) = (shared.clone(), sink.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("tickfan-upstream-{}", cfg.name))
                .spawn(move || run(s, cfg, k, stats))?,
        );
    }
    Ok(threads)
}

/// The connector loop for one entry: connect, serve, back off, again, until shutdown. One
/// thread owns the entry, so there is never more than one connection for it.
pub fn run(shared: Arc<Shared>, cfg: UpstreamConfig, sink: Sink, stats: Arc<UpstreamStats>) {
    let mut backoff = Backoff::new(
        cfg.reconnect_min_ms,
        cfg.reconnect_max_ms,
        crate::backoff::seed(),
    );
    let mut instance = 0u64;
    let mut unmapped_log = UnmappedLog::default();
    stats.state.set(LinkState::Down);
    while !shared.ingest_draining() && !shared.is_stopped() {
        instance += 1;
        let id = format!("{}#{instance}", cfg.name);
        stats.connects.inc();
        info!("upstream {id}: connecting to {}", cfg.url);
        let end = match connect(&cfg) {
            Ok(mut ws) => {
                let opened = Instant::now();
                stats.state.set(LinkState::Up);
                stats.instance.set(instance);
                stats.connected_since_ms.set(now_ms());
                info!("upstream {id}: connected");
                let mut last_rx = opened;
                let end = serve(
                    &shared,
                    &cfg,
                    &sink,
                    &stats,
                    &mut ws,
                    &mut unmapped_log,
                    &mut last_rx,
                );
                let _ = ws.close(None);
                let _ = ws.flush();
                stats.state.set(LinkState::Down);
                stats.instance.set(0);
                // A connection that delivered for a while starts the backoff over (one that
                // only stalled does not).
                if last_rx - opened >= Duration::from_millis(cfg.stale_after_ms) {
                    backoff.reset();
                }
                end
            }
            Err(e) => End::Lost(format!("connect failed: {e}")),
        };
        match end {
            End::Shutdown => {
                info!("upstream {id}: closed (shutdown)");
                break;
            }
            End::Stale(ms) => {
                stats.stale.inc();
                stats.disconnects.inc();
                let msg = format!("nothing received for {ms} ms: stale");
                stats.error(msg.clone());
                warn!("upstream {id}: {msg}");
            }
            End::Lost(why) => {
                stats.disconnects.inc();
                stats.error(why.clone());
                warn!("upstream {id}: disconnected: {why}");
            }
        }
        let wait = backoff.next_delay();
        info!("upstream {}: retry {} in {wait:?}", cfg.name, instance + 1);
        sleep_unless_draining(&shared, wait);
    }
    stats.state.set(LinkState::Off);
}

fn connect(cfg: &UpstreamConfig) -> Result<Socket, String> {
    crate::net::client::connect(
        &cfg.url,
        Duration::from_millis(cfg.connect_timeout_ms),
        Duration::from_millis(READ_SLICE_MS),
    )
}

/// Serves one connection until it ends.
fn serve(
    shared: &Shared,
    cfg: &UpstreamConfig,
    sink: &Sink,
    stats: &UpstreamStats,
    ws: &mut Socket,
    unmapped_log: &mut UnmappedLog,
    last_rx: &mut Instant,
) -> End {
    for frame in &cfg.subscribe {
        if let Err(e) = ws.send(Message::text(frame.clone())) {
            return End::Lost(format!("sending the subscribe frame: {e}"));
        }
    }
    let ping_every = Duration::from_millis(cfg.ping_interval_ms);
    let stale_after = Duration::from_millis(cfg.stale_after_ms);
    *last_rx = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        if shared.ingest_draining() || shared.is_stopped() {
            return End::Shutdown;
        }
        if last_rx.elapsed() >= stale_after {
            return End::Stale(last_rx.elapsed().as_millis() as u64);
        }
        if last_ping.elapsed() >= ping_every {
            last_ping = Instant::now();
            if let Err(e) = ws.send(Message::Ping(Vec::new().into())) {
                return End::Lost(format!("ping: {e}"));
            }
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                *last_rx = Instant::now();
                on_text(shared, cfg, sink, stats, t.as_str(), unmapped_log);
            }
            Ok(Message::Binary(_)) => {
                *last_rx = Instant::now();
                stats.unmapped.inc();
                unmapped_log.note(&cfg.name, "binary frame");
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => {
                *last_rx = Instant::now();
            }
            Ok(Message::Close(frame)) => {
                let why = frame
                    .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                    .unwrap_or_default();
                return End::Lost(format!("closed by the upstream ({why})"));
            }
            Err(e) if crate::net::client::is_timeout(&e) => {
                // Queued pongs go out even while the upstream is quiet.
                let _ = ws.flush();
            }
            Err(e) => return End::Lost(e.to_string()),
        }
    }
}

fn on_text(
    shared: &Shared,
    cfg: &UpstreamConfig,
    sink: &Sink,
    stats: &UpstreamStats,
    text: &str,
    unmapped_log: &mut UnmappedLog,
) {
    let max_name = shared.config().limits.max_name_bytes;
    let m = match mapping::map(cfg, text) {
        Outcome::Data(m) => m,
        Outcome::Control => return,
        Outcome::Unmapped(why) => {
            stats.unmapped.inc();
            unmapped_log.note(&cfg.name, &why);
            return;
        }
    };
    let checked = check_name("symbol", &m.symbol, max_name)
        .and_then(|_| check_name("dataType", &m.data_type, max_name))
        .and_then(|_| {
            serde_json::from_str::<serde::de::IgnoredAny>(&m.data)
                .map(|_| ())
                .map_err(|e| format!("data is not JSON: {e}"))
        });
    if let Err(why) = checked {
        stats.unmapped.inc();
        unmapped_log.note(&cfg.name, &why);
        return;
    }
    let msg = PublishMsg {
        exchange: Cow::Borrowed(&cfg.exchange),
        symbol: Cow::Borrowed(&m.symbol),
        data_type: Cow::Borrowed(&m.data_type),
        ts: m.ts,
        data: &m.data,
    };
    let (accepted, refused) = sink.publish([(0, &msg)], now_ms());
    stats.messages.add(accepted);
    shared.stats.ingest.accepted_from_upstreams.add(accepted);
    if !refused.is_empty() {
        stats.refused.add(refused.len() as u64);
    }
}

/// Rate-limited logging of unmapped messages: the first at once, then a summary at most every
/// [`UNMAPPED_LOG_EVERY_MS`].
#[derive(Default)]
struct UnmappedLog {
    last_ms: u64,
    since: u64,
}

impl UnmappedLog {
    fn note(&mut self, name: &str, why: &str) {
        self.since += 1;
        let now = now_ms();
        if now.saturating_sub(self.last_ms) >= UNMAPPED_LOG_EVERY_MS {
            warn!(
                "upstream {name}: {} message(s) not mapped, latest: {why}",
                self.since
            );
            self.last_ms = now;
            self.since = 0;
        }
    }
}
