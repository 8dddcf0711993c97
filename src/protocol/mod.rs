//! The wire protocol v1: message parsing, reply encoding and WebSocket frame encoding.
//!
//! See `docs/protocol.md` for the protocol as implemented.

pub mod client;
pub mod codes;
pub mod frame;
pub mod outbound;
pub mod publish;
pub mod scan;

pub use codes::{CloseCode, ErrorCode};
