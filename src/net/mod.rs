//! Networking shared by workers and the ingest thread: listeners, HTTP request heads, output
//! queues with vectored writes, and the WebSocket connection state machine.

pub mod client;
pub mod conn;
pub mod http;
pub mod listener;
pub mod outqueue;
pub mod sweep;

/// Whether an I/O error means "try again when the socket is ready".
pub fn would_block(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::WouldBlock
}

/// Whether an I/O error means "interrupted by a signal, retry now".
pub fn interrupted(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::Interrupted
}
