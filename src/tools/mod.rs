//! Command-line tools shipped with the gateway: `tickfan sub` (a terminal subscriber) and
//! `tickfan pub` (publishes JSON lines from stdin).

pub mod publish;
pub mod sub;

use thiserror::Error;

/// Why a tool stopped.
#[derive(Debug, Error)]
pub enum ToolError {
    /// The gateway could not be reached, or the connection failed.
    #[error("connection: {0}")]
    Connect(String),
    /// The gateway refused what the tool asked (a token, a filter): retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// Standard input could not be read.
    #[error("input: {0}")]
    Input(String),
    /// Standard output could not be written (closed pipe).
    #[error("output: {0}")]
    Output(String),
}
