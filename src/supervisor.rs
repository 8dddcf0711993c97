//! The main thread's job once the gateway runs: signals (SIGTERM/SIGINT drain, SIGUSR1 stats
//! dump, SIGHUP reload and log reopen), and systemd notifications (READY, STATUS, WATCHDOG
//! while every worker turns its loop, STOPPING).

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use crate::admin::{dump, health};
use crate::config::{reload, Config};
use crate::logging::LogControl;
use crate::notify::Notifier;
use crate::server::ServerHandle;
use crate::shared::Shared;

/// How soon the supervisor looks again when a watchdog ping was due but held back (a worker
/// stalled), and how often it checks the shutdown's progress.
const TICK: Duration = Duration::from_millis(50);
/// Token of the signal pipe in the supervisor's poll.
const SIGNALS: Token = Token(0);
/// How often STATUS= is sent.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// The signals the supervisor handles, and the poll it sleeps in until one comes or a
/// notification is due (an idle gateway's main thread does not wake on a timer otherwise).
pub struct SignalWatch {
    poll: Poll,
    signals: Signals,
}

/// Registers the signals the supervisor handles. Register them before starting the server so
/// that no thread ever runs with the default (terminating) action.
pub fn register_signals() -> std::io::Result<SignalWatch> {
    let poll = Poll::new()?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGHUP])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    Ok(SignalWatch { poll, signals })
}

impl SignalWatch {
    /// Waits until a signal comes or `timeout` passes (`None`: until a signal).
    fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) {
        if let Err(e) = crate::net::poll_events(&mut self.poll, events, timeout) {
            // Not expected; sleep so that a persistent failure cannot spin.
            warn!("supervisor: poll failed: {e}");
            std::thread::sleep(timeout.unwrap_or(TICK).min(TICK));
        }
    }
}

/// Sends `WATCHDOG=1` at its interval, but only while every worker's loop turned within
/// `health.worker_stall_ms`: a stuck worker lets systemd's watchdog fire.
#[derive(Debug)]
pub struct Watchdog {
    interval: Duration,
    last: Option<Instant>,
}

impl Watchdog {
    /// A watchdog pinging every `interval` (half of `WATCHDOG_USEC`).
    pub fn new(interval: Duration) -> Self {
        Watchdog {
            interval,
            last: None,
        }
    }

    /// How long until [`Self::tick`] has something to do: the rest of the interval, or
    /// [`TICK`] when a ping is due (it was held back because a worker stalled).
    fn next_check(&self) -> Duration {
        let left = self.last.map_or(Duration::ZERO, |t| {
            self.interval.saturating_sub(t.elapsed())
        });
        if left.is_zero() {
            TICK
        } else {
            left
        }
    }

    /// Sends `WATCHDOG=1` if it is due and the workers are alive. Returns whether it sent.
    pub fn tick(&mut self, shared: &Shared, notifier: &Notifier) -> bool {
        if self.last.is_some_and(|t| t.elapsed() < self.interval) {
            return false;
        }
        if !health::stalled_workers(shared).is_empty() {
            return false;
        }
        self.last = Some(Instant::now());
        notifier.notify("WATCHDOG=1").is_ok()
    }
}

/// Rates for STATUS=, from counter deltas.
#[derive(Debug, Default)]
struct Rates {
    at: Option<Instant>,
    accepted: u64,
    written: u64,
}

impl Rates {
    fn status(&mut self, shared: &Shared) -> String {
        let s = shared.stats.snapshot();
        let now = Instant::now();
        let secs = self.at.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        let rate = |new: u64, old: u64| {
            if secs > 0.0 {
                (new.saturating_sub(old)) as f64 / secs
            } else {
                0.0
            }
        };
        let line = format!(
            "STATUS={} connections, {:.0} msg/s in, {:.0} msg/s out",
            s.active_connections,
            rate(s.messages_accepted, self.accepted),
            rate(s.delivery.written, self.written)
        );
        *self = Rates {
            at: Some(now),
            accepted: s.messages_accepted,
            written: s.delivery.written,
        };
        line
    }
}

/// Runs the main thread until a terminating signal, then shuts down gracefully (a second
/// signal exits at once). `reload` re-reads the configuration (file plus command-line
/// overrides). Returns the process exit code.
pub fn run(
    handle: ServerHandle,
    mut watch: SignalWatch,
    notifier: Option<Notifier>,
    watchdog: Option<Duration>,
    log: Option<LogControl>,
    mut reload: impl FnMut() -> Result<Config, String>,
) -> i32 {
    let shared = handle.shared().clone();
    let mut rates = Rates::default();
    let mut watchdog = watchdog.map(Watchdog::new);
    let send = |state: &str| {
        if let Some(n) = &notifier {
            if let Err(e) = n.notify(state) {
                warn!("sd_notify {state}: {e}");
            }
        }
    };
    send(&format!("READY=1\n{}", rates.status(&shared)));
    let mut last_status = Instant::now();
    let mut events = Events::with_capacity(4);
    'running: loop {
        for sig in watch.signals.pending() {
            match sig {
                SIGUSR1 => {
                    for line in dump::lines(&shared) {
                        info!("{line}");
                    }
                }
                SIGHUP => {
                    if let Some(l) = &log {
                        l.reopen();
                    }
                    apply_reload(&shared, log.as_ref(), reload());
                }
                _ => {
                    info!("signal {sig}: shutting down gracefully (a second signal exits at once)");
                    break 'running;
                }
            }
        }
        if let (Some(w), Some(n)) = (watchdog.as_mut(), notifier.as_ref()) {
            w.tick(&shared, n);
        }
        if last_status.elapsed() >= STATUS_INTERVAL {
            last_status = Instant::now();
            send(&rates.status(&shared));
        }
        // Sleep until a signal, or until the next notification is due (none without systemd).
        let timeout = notifier.as_ref().map(|_| {
            let status = STATUS_INTERVAL.saturating_sub(last_status.elapsed());
            watchdog
                .as_ref()
                .map_or(status, |w| status.min(w.next_check()))
        });
        watch.wait(&mut events, timeout);
    }
    send("STOPPING=1");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        handle.shutdown();
        let _ = done_tx.send(());
    });
    loop {
        if done_rx.recv_timeout(TICK).is_ok() {
            info!("stopped");
            return 0;
        }
        if let Some(sig) = watch
            .signals
            .pending()
            .find(|s| *s == SIGTERM || *s == SIGINT)
        {
            warn!("second signal {sig}: exiting now");
            return 128 + sig;
        }
    }
}

/// Applies a reloaded configuration, or keeps the old one whole when it is invalid.
fn apply_reload(shared: &Arc<Shared>, log: Option<&LogControl>, new: Result<Config, String>) {
    let new = match new {
        Ok(c) => c,
        Err(e) => {
            error!("reload failed, keeping the old configuration: {e}");
            return;
        }
    };
    let old = shared.config();
    let r = reload::reload(&old, new);
    for line in &r.ignored {
        warn!("reload: {line} needs a restart; keeping the old value");
    }
    if r.applied.is_empty() {
        info!("reload: no change");
        return;
    }
    if let (Some(l), Ok(level)) = (log, r.config.log_level()) {
        l.set_level(level);
    }
    for line in &r.applied {
        info!("reload: {line}");
    }
    shared.set_config(r.config);
}
