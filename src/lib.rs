//! tickfan: a thread-per-core WebSocket gateway that fans market data (trades, tickers, depth)
//! out from publishers to thousands of filtered subscribers.
//!
//! Layout: [`server`] starts everything; [`worker`] owns subscriber connections; [`ingest`]
//! owns publisher connections and the sequencer; [`bus`] carries data between them; [`net`] is
//! sockets, HTTP and WebSocket plumbing; [`protocol`] is the wire format; [`routing`] the
//! filters and subscription index; [`feed`] the synthetic source; [`admin`] the admin listener;
//! [`stats`] the counters; [`config`] the configuration.

#![deny(missing_docs)]

pub mod admin;
pub mod admission;
pub mod auth;
pub mod backoff;
pub mod broker;
pub mod bus;
pub mod clock;
pub mod config;
pub mod feed;
pub mod ingest;
pub mod loadgen;
pub mod logging;
pub mod net;
pub mod notify;
pub mod prefetch;
pub mod procfs;
pub mod protocol;
pub mod routing;
pub mod server;
pub mod shared;
pub mod stats;
pub mod supervisor;
pub mod timer;
pub mod tools;
pub mod upstream;
pub mod worker;

pub use config::{Config, ConfigBuilder};
pub use server::{ServerHandle, StartError};
