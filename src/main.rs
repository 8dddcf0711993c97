//! The `tickfan` binary: command line, logging, start, and signals.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use log::info;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tickfan::config::FeedKind;
use tickfan::{ConfigBuilder, ServerHandle};

/// tickfan: a WebSocket market-data fan-out gateway.
///
/// Publishers send JSON market data to the ingest listener (`/publish`); subscribers connect to
/// the public listener (`/ws`) and subscribe with filters on exchange, symbol and dataType.
/// Without a config file the embedded synthetic feed runs, so data flows at once.
#[derive(Debug, Parser)]
#[command(name = "tickfan", version, about, long_about, after_help = AFTER_HELP)]
struct Cli {
    /// TOML configuration file (every key has a default; see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Public listener address for /ws and /health (`off` to disable) [server.listen].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Ingest listener address for /publish (`off` to disable) [server.ingest].
    #[arg(long, value_name = "ADDR")]
    ingest: Option<String>,
    /// Admin listener address for /health and /stats (`off` to disable) [server.admin].
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Worker threads, 0 = one per core [server.workers].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Embedded feed: `synthetic` or `none` [feed.source].
    #[arg(long, value_name = "KIND", value_parser = ["synthetic", "none"])]
    feed: Option<String>,
    /// Log level: off, error, warn, info, debug, trace [log.level].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Override any config key by its dotted name, e.g. `--set limits.max_connections=100`.
    /// Repeatable; applied after the file and the flags above.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

const AFTER_HELP: &str = "Examples:
  tickfan                                  synthetic feed, ws://0.0.0.0:8080/ws
  tickfan --feed none --ingest 127.0.0.1:8081
  tickfan --config /etc/tickfan/tickfan.toml --set limits.max_connections=20000

Subscribe: connect to ws://HOST:8080/ws and send
  {\"type\":\"subscribe\",\"id\":1,\"exchange\":[\"binance\"],\"symbols\":[\"BTCUSDT\"],\"dataTypes\":[\"trade\"]}";

fn build_config(cli: &Cli) -> anyhow::Result<tickfan::Config> {
    let mut b = ConfigBuilder::new();
    if let Some(path) = &cli.config {
        b = b.file(path)?;
    }
    let flags = [
        ("server.listen", cli.listen.as_ref().map(|v| toml_str(v))),
        ("server.ingest", cli.ingest.as_ref().map(|v| toml_str(v))),
        ("server.admin", cli.admin.as_ref().map(|v| toml_str(v))),
        ("server.workers", cli.workers.map(|n| n.to_string())),
        ("feed.source", cli.feed.as_ref().map(|v| toml_str(v))),
        ("log.level", cli.log_level.as_ref().map(|v| toml_str(v))),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            b = b.set(key, &v)?;
        }
    }
    for pair in &cli.set {
        b = b.set_pair(pair)?;
    }
    Ok(b.build()?)
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn init_logging(level: log::LevelFilter) -> anyhow::Result<()> {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(log::LevelFilter::Off)
        .set_target_level(log::LevelFilter::Off)
        .build();
    simplelog::WriteLogger::init(level, config, std::io::stderr()).context("cannot start logging")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match build_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tickfan: configuration error: {e:#}");
            std::process::exit(2);
        }
    };
    init_logging(config.log_level()?)?;
    // Register before any thread starts, so every thread inherits the handlers.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot register signal handlers")?;
    let synthetic = config.feed.source == Some(FeedKind::Synthetic);
    let handle = ServerHandle::start(config)?;
    if let Some(addr) = handle.public_addr() {
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        info!("subscribe at ws://{host}:{}/ws", addr.port());
        if synthetic {
            info!(
                "try: websocat ws://{host}:{}/ws then send {{\"type\":\"subscribe\",\"id\":1,\"exchange\":[\"binance\"],\"symbols\":[\"BTCUSDT\"],\"dataTypes\":[\"trade\"]}}",
                addr.port()
            );
        }
    }
    if let Some(addr) = handle.ingest_addr() {
        info!("publishers connect to ws://{addr}/publish");
    }
    if let Some(sig) = signals.forever().next() {
        info!("signal {sig}: shutting down gracefully (a second signal exits at once)");
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        handle.shutdown();
        let _ = done_tx.send(());
    });
    loop {
        if done_rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_ok()
        {
            break;
        }
        if let Some(sig) = signals.pending().next() {
            log::warn!("second signal {sig}: exiting now");
            std::process::exit(128 + sig);
        }
    }
    info!("stopped");
    Ok(())
}
