//! The `tickfan` binary: command line, logging, start, and signals.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use log::info;
use tickfan::config::FeedKind;
use tickfan::notify::{self, Notifier};
use tickfan::{supervisor, ConfigBuilder, ServerHandle};

/// tickfan: a WebSocket market-data fan-out gateway.
///
/// Publishers send JSON market data to the ingest listener (`/publish`); subscribers connect to
/// the public listener (`/ws`) and subscribe with filters on exchange, symbol and dataType.
/// Without a config file the embedded synthetic feed runs, so data flows at once.
#[derive(Debug, Clone, Parser)]
#[command(name = "tickfan", version, about, long_about, after_help = AFTER_HELP)]
struct Cli {
    /// A tool instead of the server.
    #[command(subcommand)]
    command: Option<Tool>,
    /// TOML configuration file (every key has a default; see docs/configuration.md).
    #[arg(long, value_name = "FILE", global = true)]
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
    /// Log level: off, error, warn, info, debug, trace [log.level]. SIGHUP re-reads it.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log to FILE instead of stderr; SIGHUP reopens it (for logrotate) [log.file].
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Override any config key by its dotted name, e.g. `--set limits.max_connections=100`.
    /// Repeatable; applied after the file and the flags above.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
}

/// Tools shipped with the server.
#[derive(Debug, Clone, clap::Subcommand)]
enum Tool {
    /// Mint a subscriber token (HS256, signed with auth.jwt_secret) for testing and for
    /// operators: prints the JWT on stdout.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds (`exp` = now + ttl).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// A channel pattern `exchange/symbol/dataType` (`*` for any part); repeatable. Without
        /// any, the token allows every stream.
        #[arg(long = "channel", value_name = "PATTERN")]
        channels: Vec<String>,
        /// Audience (`aud`); default auth.jwt_audience.
        #[arg(long)]
        audience: Option<String>,
    },
    /// Load-test a running gateway with a named scenario (light, moderate, heavy, broadcast,
    /// connect) and report throughput, loss, latency and the server's CPU per delivery.
    Bench {
        /// The scenario.
        #[arg(value_parser = ["light", "moderate", "heavy", "broadcast", "connect"])]
        scenario: String,
        /// The server's public listener (`/ws`).
        #[arg(long, default_value = "127.0.0.1:8080")]
        to: std::net::SocketAddr,
        /// The server's ingest listener (`/publish`).
        #[arg(long, default_value = "127.0.0.1:8081")]
        publish_to: std::net::SocketAddr,
        /// The server's pid, to read its CPU time and memory from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Seconds to publish (default 10).
        #[arg(long)]
        duration: Option<u64>,
        /// Messages per second (default: the scenario's).
        #[arg(long)]
        rate: Option<u64>,
        /// Subscribers (default: the scenario's).
        #[arg(long)]
        subscribers: Option<usize>,
        /// Connections in their handshake at once (default 100).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Subscribe and print data messages; reconnects with backoff and jitter, resumes from the
    /// last seq seen, and reports gaps on stderr.
    Sub {
        /// The gateway's `/ws` URL, e.g. ws://127.0.0.1:8080/ws (add ?token=JWT if needed).
        url: String,
        /// Exchanges, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        exchange: Vec<String>,
        /// Symbols, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        symbols: Vec<String>,
        /// Data types, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        data_types: Vec<String>,
        /// Start each stream with its newest message.
        #[arg(long)]
        snapshot: bool,
        /// Print each message as received, one JSON object per line.
        #[arg(long)]
        json: bool,
        /// Exit after this many data messages.
        #[arg(long)]
        count: Option<u64>,
        /// First reconnect delay in ms (doubles up to 30 s, +/-30% jitter).
        #[arg(long, default_value_t = 1000)]
        reconnect_min_ms: u64,
    },
    /// Publish JSON lines from stdin (one message, or an array of messages, per line) and report
    /// the gateway's errors per line on stderr. Exits 1 if any line had an error.
    Pub {
        /// The gateway's `/publish` URL, e.g. ws://127.0.0.1:8081/publish (?token=... if needed).
        url: String,
    },
    /// Run the baseline fan-out server that `bench` results are compared with.
    BenchBaseline {
        /// Public listener.
        #[arg(long, default_value = "127.0.0.1:8090")]
        public: std::net::SocketAddr,
        /// Ingest listener.
        #[arg(long, default_value = "127.0.0.1:8091")]
        ingest: std::net::SocketAddr,
    },
}

/// `tickfan bench` and `tickfan bench-baseline`.
fn run_tool_bench(tool: &Tool) -> anyhow::Result<()> {
    use tickfan::loadgen;
    match tool {
        Tool::BenchBaseline { public, ingest } => Ok(loadgen::baseline::serve(*public, *ingest)?),
        Tool::Bench {
            scenario,
            to,
            publish_to,
            server_pid,
            duration,
            rate,
            subscribers,
            concurrency,
            json,
        } => {
            let mut s = loadgen::Scenario::preset(scenario)
                .ok_or_else(|| anyhow::anyhow!("unknown scenario {scenario}"))?;
            if let Some(d) = duration {
                s.duration = std::time::Duration::from_secs(*d);
            }
            if let Some(r) = rate {
                s.rate = *r;
            }
            if let Some(n) = subscribers {
                s.subscribers = *n;
            }
            if let Some(c) = concurrency {
                s.concurrency = (*c).max(1);
            }
            let target = loadgen::Target {
                public: *to,
                ingest: *publish_to,
                server_pid: *server_pid,
            };
            eprintln!(
                "bench {}: {} subscribers, {} msg/s over {} streams ({:.0} deliveries/s asked), {} s",
                s.name,
                s.subscribers,
                s.rate,
                s.streams,
                s.deliveries_per_sec(),
                s.duration.as_secs()
            );
            let report = loadgen::run(&s, &target, !json)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", loadgen::table(&report));
            }
            Ok(())
        }
        _ => unreachable!("handled elsewhere"),
    }
}

/// `tickfan sub` and `tickfan pub`: returns the exit code.
fn run_client_tool(tool: &Tool) -> i32 {
    use tickfan::tools::{publish, sub, ToolError};
    let stderr = &mut std::io::stderr();
    let result = match tool {
        Tool::Sub {
            url,
            exchange,
            symbols,
            data_types,
            snapshot,
            json,
            count,
            reconnect_min_ms,
        } => {
            let opts = sub::SubOptions {
                url: url.clone(),
                exchange: exchange.clone(),
                symbols: symbols.clone(),
                data_types: data_types.clone(),
                snapshot: *snapshot,
                json: *json,
                count: *count,
                reconnect_min_ms: *reconnect_min_ms,
                ..sub::SubOptions::default()
            };
            sub::run(&opts, &mut std::io::stdout().lock(), stderr).map(|r| {
                let _ = writeln!(
                    std::io::stderr(),
                    "{} messages, {} gaps ({} missed), {} reconnects",
                    r.messages,
                    r.gaps,
                    r.missed,
                    r.reconnects
                );
                0
            })
        }
        Tool::Pub { url } => publish::run(url, &mut std::io::stdin().lock(), stderr).map(|r| {
            let _ = writeln!(
                std::io::stderr(),
                "{} lines sent, {} errors on {} lines{}",
                r.lines,
                r.errors,
                r.lines_with_errors,
                if r.confirmed {
                    ""
                } else {
                    " (the gateway did not confirm every line)"
                }
            );
            i32::from(r.errors > 0 || !r.confirmed)
        }),
        _ => return 2,
    };
    match result {
        Ok(code) => code,
        Err(ToolError::Output(_)) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tickfan: {e}");
            2
        }
    }
}

/// `tickfan token`: signs a token with the configured secret.
fn mint_token(config: &tickfan::Config, tool: &Tool) -> anyhow::Result<String> {
    let Tool::Token {
        sub,
        ttl,
        channels,
        audience,
    } = tool
    else {
        anyhow::bail!("not a token command");
    };
    let secret = &config.auth.jwt_secret;
    anyhow::ensure!(
        !secret.is_empty(),
        "auth.jwt_secret is not set (config file, or --set auth.jwt_secret=...)"
    );
    for c in channels {
        tickfan::auth::channels::ChannelPattern::parse(c).map_err(anyhow::Error::msg)?;
    }
    let aud = audience.clone().or_else(|| {
        (!config.auth.jwt_audience.is_empty()).then(|| config.auth.jwt_audience.clone())
    });
    let iss = (!config.auth.jwt_issuer.is_empty()).then(|| config.auth.jwt_issuer.clone());
    let claims = tickfan::auth::Claims {
        sub: sub.clone(),
        exp: tickfan::shared::now_ms() / 1000 + ttl,
        aud,
        iss,
        channels: (!channels.is_empty()).then(|| channels.clone()),
    };
    tickfan::auth::mint_hs256(secret, &claims).map_err(|e| anyhow::anyhow!(e.0))
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
        (
            "log.file",
            cli.log_file
                .as_ref()
                .map(|v| toml_str(&v.to_string_lossy())),
        ),
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match build_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tickfan: configuration error: {e:#}");
            std::process::exit(2);
        }
    };
    if let Some(tool @ (Tool::Sub { .. } | Tool::Pub { .. })) = &cli.command {
        std::process::exit(run_client_tool(tool));
    }
    if let Some(tool @ (Tool::Bench { .. } | Tool::BenchBaseline { .. })) = &cli.command {
        if let Err(e) = run_tool_bench(tool) {
            eprintln!("tickfan: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    if let Some(tool) = &cli.command {
        match mint_token(&config, tool) {
            Ok(token) => println!("{token}"),
            Err(e) => {
                eprintln!("tickfan token: {e:#}");
                std::process::exit(2);
            }
        }
        return Ok(());
    }
    let log_file = config.log.file.as_ref().map(PathBuf::from);
    let log = tickfan::logging::init(config.log_level()?, log_file.as_deref())
        .context("cannot start logging")?;
    // Register before any thread starts, so no thread ever runs with the default actions.
    let signals = supervisor::register_signals().context("cannot register signal handlers")?;
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
    if let Some(addr) = handle.admin_addr() {
        info!("admin on http://{addr} (/health, /stats, /metrics, POST /flush)");
    }
    let reload = move || build_config(&cli).map_err(|e| format!("{e:#}"));
    let code = supervisor::run(
        handle,
        signals,
        Notifier::from_env(),
        notify::watchdog_interval_from_env(),
        Some(log),
        reload,
    );
    std::process::exit(code);
}
