//! Error codes of `error` replies and WebSocket close codes, with their meanings.

/// The `code` of an `error` reply. An error reply never closes a connection by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The text frame is not valid JSON.
    InvalidJson,
    /// Valid JSON, but not a valid message (wrong field type, missing field, binary frame).
    InvalidMessage,
    /// The `type` is not one the gateway knows.
    UnknownType,
    /// The connection already holds `limits.max_filters_per_connection` filters.
    TooManySubscriptions,
    /// The connection sent more messages than its token bucket allows.
    RateLimited,
    /// The request is not allowed on this connection (for example publishing on `/ws`).
    Forbidden,
    /// A client message larger than `limits.max_message_bytes` (followed by close 1009).
    MessageTooLarge,
    /// An `unsubscribe` names a filter this connection does not hold.
    NotFound,
    /// A publisher message would create a stream past `limits.max_streams`.
    TooManyStreams,
    /// The message could not be accepted now (the bus is down, or this node does not take
    /// publishes); it was not delivered: retry, or publish to another node.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for counters.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidJson,
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownType,
        ErrorCode::TooManySubscriptions,
        ErrorCode::RateLimited,
        ErrorCode::Forbidden,
        ErrorCode::MessageTooLarge,
        ErrorCode::NotFound,
        ErrorCode::TooManyStreams,
        ErrorCode::Unavailable,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::UnknownType => "UNKNOWN_TYPE",
            ErrorCode::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::TooManyStreams => "TOO_MANY_STREAMS",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// Position in [`ErrorCode::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// WebSocket close codes the gateway sends (protocol.md, "Close codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: normal close.
    Normal,
    /// 1001: shutting down, or idle/stale past a timeout.
    GoingAway,
    /// 1002: the peer broke the WebSocket protocol.
    Protocol,
    /// 1007: invalid UTF-8 in a text message.
    InvalidPayload,
    /// 1008: policy (auth, forbidden, repeated rate-limit abuse).
    Policy,
    /// 1009: a message larger than the configured maximum.
    TooBig,
    /// 1011: internal error.
    Internal,
    /// 1012: service restart: the feed's epoch changed (a new sequence began); subscribe
    /// again.
    Restart,
    /// 1013: over capacity.
    TryAgainLater,
    /// 4001: slow consumer.
    SlowConsumer,
    /// 4002: replaced by a newer connection of the same user.
    Replaced,
}

impl CloseCode {
    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::Restart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::SlowConsumer => 4001,
            CloseCode::Replaced => 4002,
        }
    }
}
