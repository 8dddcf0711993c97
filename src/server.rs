//! Starting and stopping the whole gateway: binds every listener, spawns the workers, the
//! ingest thread, the synthetic feed and the admin thread, and hands back a [`ServerHandle`].

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use log::info;
use mio::{Poll, Waker};
use thiserror::Error;

use crate::bus;
use crate::config::{Config, ConfigError, FeedKind};
use crate::ingest::{self, Dispatcher, IngestServer, Sink};
use crate::net::listener;
use crate::shared::Shared;
use crate::stats::Snapshot;
use crate::worker::{self, Worker};

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound (address in use, permission).
    #[error("cannot bind the {listener} listener on {addr}: {source}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Creating a poll, waker or thread failed.
    #[error("cannot start {what}: {source}")]
    Io {
        /// What was being started.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> StartError {
    move |source| StartError::Io { what, source }
}

/// A running gateway. Dropping it shuts it down.
pub struct ServerHandle {
    shared: Arc<Shared>,
    /// Feed and ingest threads (stopped first), workers, then the rest.
    source_threads: Vec<JoinHandle<()>>,
    worker_threads: Vec<JoinHandle<()>>,
    other_threads: Vec<JoinHandle<()>>,
    wakers: Vec<Arc<Waker>>,
    links: Vec<bus::WorkerLink>,
    public_addr: Option<SocketAddr>,
    ingest_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
}

fn bind(
    name: &'static str,
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> Result<Vec<mio::net::TcpListener>, StartError> {
    listener::bind_group(addr, count, backlog).map_err(|source| StartError::Bind {
        listener: name,
        addr,
        source,
    })
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(io_err("a thread"))
}

impl ServerHandle {
    /// Binds every listener and starts every thread.
    pub fn start(config: Config) -> Result<ServerHandle, StartError> {
        config.validate()?;
        let workers = config.worker_count();
        let backlog = config.server.listen_backlog;
        let public = match config.listen_addr()? {
            Some(a) => bind("public", a, workers, backlog)?
                .into_iter()
                .map(Some)
                .collect(),
            None => (0..workers).map(|_| None).collect::<Vec<_>>(),
        };
        let ingest_listener = match config.ingest_addr()? {
            Some(a) => bind("ingest", a, 1, backlog)?.pop(),
            None => None,
        };
        let admin_listener = match config.admin_addr()? {
            Some(a) => bind("admin", a, 1, backlog)?.pop(),
            None => None,
        };
        let addr_of = |l: Option<&mio::net::TcpListener>| l.and_then(|l| l.local_addr().ok());
        let public_addr = addr_of(public.first().and_then(Option::as_ref));
        let ingest_addr = addr_of(ingest_listener.as_ref());
        let admin_addr = addr_of(admin_listener.as_ref());

        let shared = Arc::new(Shared::new(config, workers));
        let mut handle = ServerHandle {
            shared: shared.clone(),
            source_threads: Vec::new(),
            worker_threads: Vec::new(),
            other_threads: Vec::new(),
            wakers: Vec::new(),
            links: Vec::new(),
            public_addr,
            ingest_addr,
            admin_addr,
        };
        let capacity = shared.config().server.worker_channel_capacity;
        let mut links = Vec::new();
        let mut worker_list = Vec::new();
        for (i, l) in public.into_iter().enumerate() {
            let poll = Poll::new().map_err(io_err("a worker poll"))?;
            let waker =
                Arc::new(Waker::new(poll.registry(), worker::WAKER).map_err(io_err("a waker"))?);
            let (link, inbox) = bus::inbox(capacity, waker.clone());
            links.push(link);
            handle.wakers.push(waker);
            worker_list
                .push(Worker::new(i, poll, l, inbox, shared.clone()).map_err(io_err("a worker"))?);
        }
        handle.links = links.clone();
        shared.set_links(links.clone());
        let max_streams = shared.config().limits.max_streams;
        let dispatcher = Arc::new(Mutex::new(Dispatcher::new(
            links,
            shared.stats.ingest.clone(),
            max_streams,
        )));
        let bus_cfg = shared.config().bus.clone();
        let sink = if bus_cfg.enabled() {
            let bus = crate::broker::start(&shared, &dispatcher).map_err(io_err("the bus"))?;
            handle.source_threads.extend(bus.threads);
            match bus.forwarder {
                Some(f) => Sink::Bus(f),
                None => Sink::Refuse,
            }
        } else {
            Sink::Local(dispatcher.clone())
        };
        if let Some(l) = ingest_listener {
            match worker_list.first_mut() {
                Some(w) if shared.config().ingest_on_worker() => {
                    w.colocate_ingest(l, sink.clone())
                        .map_err(io_err("the ingest listener"))?;
                }
                _ => {
                    let poll = Poll::new().map_err(io_err("the ingest poll"))?;
                    let waker = Arc::new(
                        Waker::new(poll.registry(), ingest::WAKER).map_err(io_err("a waker"))?,
                    );
                    handle.wakers.push(waker);
                    let server = IngestServer::new(
                        ingest::Placement::Thread(poll),
                        l,
                        sink.clone(),
                        shared.clone(),
                    )
                    .map_err(io_err("the ingest listener"))?;
                    handle
                        .source_threads
                        .push(spawn("tickfan-ingest".into(), move || server.run())?);
                }
            }
        }
        // Each worker makes its io_uring on its own thread (Worker::open_ring says why); start
        // returns once they have, so the stats say from the first read how each one writes.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for (i, mut w) in worker_list.into_iter().enumerate() {
            let ready = ready_tx.clone();
            handle
                .worker_threads
                .push(spawn(format!("tickfan-worker-{i}"), move || {
                    w.open_ring();
                    // Sent, then dropped: start waits until no sender is left.
                    let _ = ready.send(());
                    drop(ready);
                    w.run()
                })?);
        }
        drop(ready_tx);
        // Ends when every worker has sent (or died before it could).
        while ready_rx.recv().is_ok() {}
        if let Some(l) = admin_listener {
            let poll = Poll::new().map_err(io_err("the admin poll"))?;
            let waker = Arc::new(
                Waker::new(poll.registry(), crate::admin::WAKER).map_err(io_err("a waker"))?,
            );
            handle.wakers.push(waker);
            let s = shared.clone();
            let admin_links = handle.links.clone();
            handle
                .other_threads
                .push(spawn("tickfan-admin".into(), move || {
                    if let Err(e) = crate::admin::run(poll, l, s, admin_links, public_addr) {
                        log::error!("admin listener stopped: {e}");
                    }
                })?);
        }
        if !shared.config().upstream.is_empty() {
            let threads = crate::upstream::start(&shared, &sink).map_err(io_err("an upstream"))?;
            handle.source_threads.extend(threads);
        }
        let feed_on = shared.config().feed.source == Some(FeedKind::Synthetic);
        if feed_on && matches!(sink, Sink::Refuse) {
            log::warn!(
                "synthetic feed not started: this node only reads the bus (bus.role = edge)"
            );
        } else if feed_on {
            let (s, d) = (shared.clone(), sink.clone());
            handle
                .source_threads
                .push(spawn("tickfan-feed".into(), move || {
                    crate::feed::synthetic::run(s, d)
                })?);
        }
        info!(
            "tickfan started: {workers} workers, public {}, ingest {}, admin {}",
            show(public_addr),
            show(ingest_addr),
            show(admin_addr)
        );
        Ok(handle)
    }

    /// The bound public address (`/ws`, `/health`), if that listener is on.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public_addr
    }

    /// The bound ingest address (`/publish`), if on.
    pub fn ingest_addr(&self) -> Option<SocketAddr> {
        self.ingest_addr
    }

    /// The bound admin address, if on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The state shared with every thread (configuration, counters).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The counters summed now.
    pub fn stats(&self) -> Snapshot {
        self.shared.stats.snapshot()
    }

    /// Fault injection for tests and drills: blocks worker `index`'s loop for `duration`
    /// (queued behind the data already in its channel). Returns false if it could not be
    /// queued (channel full, or no such worker).
    pub fn stall_worker(&self, index: usize, duration: std::time::Duration) -> bool {
        let Some(link) = self.links.get(index) else {
            return false;
        };
        let sent = link.try_send(bus::WorkerMsg::Stall(duration));
        link.wake_now();
        sent
    }

    /// Graceful shutdown: sources stop and publishers get close 1001, then workers deliver
    /// what was accepted, stop accepting and close every subscriber with 1001, waiting up to
    /// `shutdown.grace_ms` (in all) for close replies; then everything stops.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn wake_all(&self) {
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    fn stop(&mut self) {
        self.shared.begin_ingest_drain();
        self.wake_all();
        for t in self.source_threads.drain(..) {
            let _ = t.join();
        }
        // A worker serving publishers closes them first (phase 1), like the ingest thread.
        while self.shared.ingest_on_worker()
            && self
                .shared
                .grace_deadline()
                .is_some_and(|d| Instant::now() < d)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.shared.begin_worker_drain();
        self.wake_all();
        for t in self.worker_threads.drain(..) {
            let _ = t.join();
        }
        self.shared.stop_all();
        self.wake_all();
        for t in self.other_threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn show(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "off".into())
}
