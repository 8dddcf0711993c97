//! Parsing subscriber messages (`subscribe`, `unsubscribe`, `ping`, `heartbeat`, `getStats`)
//! into requests, with the protocol's error code for anything malformed.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::ErrorCode;
use crate::routing::filter::{FieldMatch, Filter};

/// A request id as the client wrote it (a JSON number or string), echoed verbatim in replies.
pub type RequestId = Box<RawValue>;

/// A valid subscriber request.
#[derive(Debug)]
pub enum ClientRequest {
    /// Add a filter.
    Subscribe {
        /// Echoed id.
        id: Option<RequestId>,
        /// The filter.
        filter: Filter,
        /// Snapshot, resume and throttle options.
        options: SubscribeOptions,
    },
    /// Remove a filter by id or by its fields.
    Unsubscribe {
        /// Echoed id.
        id: Option<RequestId>,
        /// Which filter.
        target: UnsubscribeTarget,
    },
    /// JSON ping; answered with `pong`.
    Ping {
        /// Echoed id.
        id: Option<RequestId>,
    },
    /// JSON heartbeat; answered with `heartbeat_ack`.
    Heartbeat,
    /// This connection's counters; answered with `stats`.
    GetStats {
        /// Echoed id.
        id: Option<RequestId>,
    },
    /// A publish attempted on the subscriber listener.
    Publish {
        /// Echoed id.
        id: Option<RequestId>,
    },
    /// A new token before the current one expires.
    Refresh {
        /// Echoed id.
        id: Option<RequestId>,
        /// The new token.
        token: String,
    },
}

/// What a subscribe asks for besides the filter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// `"snapshot":true`: first the newest message of every stream the filter adds.
    pub snapshot: bool,
    /// `"resume"`: replay from these seqs (epoch, then stream key → last seq seen).
    pub resume: Option<Resume>,
    /// `"throttleMs"`: at most one message per stream per interval, the newest (0 = off).
    pub throttle_ms: u32,
}

/// A resume request: the epoch the client's seqs belong to and, per stream key
/// (`exchange:symbol:dataType`), the last seq it saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The epoch from an earlier `subscribed` reply.
    pub epoch: String,
    /// Stream key → last seq seen.
    pub streams: Vec<(String, u64)>,
}

/// Shortest and longest `throttleMs`.
pub const THROTTLE_MS_RANGE: std::ops::RangeInclusive<u32> = 10..=60_000;

/// Which filter an `unsubscribe` removes.
#[derive(Debug)]
pub enum UnsubscribeTarget {
    /// By the `filterId` the `subscribed` reply gave.
    FilterId(String),
    /// By the same three fields (after normalisation).
    Fields(Filter),
}

/// A request that cannot be served: the error reply to send.
#[derive(Debug)]
pub struct RequestError {
    /// Echoed id, when the message had a usable one.
    pub id: Option<RequestId>,
    /// The protocol error code.
    pub code: ErrorCode,
    /// A human-readable reason.
    pub message: String,
}

impl RequestError {
    fn new(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError {
            id,
            code,
            message: message.into(),
        }
    }
}

/// Longest string `id` echoed back (JSON text, quotes included).
const MAX_ID_BYTES: usize = 130;

/// Limits the parser enforces.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Longest exchange, symbol or dataType name.
    pub max_name_bytes: usize,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    exchange: Option<&'a RawValue>,
    #[serde(borrow, default)]
    symbols: Option<&'a RawValue>,
    #[serde(rename = "dataTypes", borrow, default)]
    data_types: Option<&'a RawValue>,
    #[serde(rename = "filterId", borrow, default)]
    filter_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    snapshot: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resume: Option<&'a RawValue>,
    #[serde(rename = "throttleMs", borrow, default)]
    throttle_ms: Option<&'a RawValue>,
}

/// Parses one text message from a subscriber.
pub fn parse_client(text: &str, limits: ParseLimits) -> Result<ClientRequest, RequestError> {
    let raw: RawRequest = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => RequestError::new(
            None,
            ErrorCode::InvalidMessage,
            "message must be a JSON object",
        ),
        _ => RequestError::new(None, ErrorCode::InvalidJson, format!("invalid JSON: {e}")),
    })?;
    let id = match raw.id {
        None => None,
        Some(v) => {
            let t = v.get().as_bytes().first().copied().unwrap_or(b' ');
            let text_ok = t == b'"' && v.get().len() <= MAX_ID_BYTES;
            // A number must also be one every JSON parser reads back (not 1e400).
            let number_ok = (t == b'-' || t.is_ascii_digit())
                && serde_json::from_str::<f64>(v.get()).is_ok_and(f64::is_finite);
            if text_ok || number_ok {
                Some(v.to_owned())
            } else {
                return Err(RequestError::new(
                    None,
                    ErrorCode::InvalidMessage,
                    "id must be a finite number or a string of at most 128 bytes",
                ));
            }
        }
    };
    let Some(kind) = raw.kind else {
        return Err(RequestError::new(
            id,
            ErrorCode::InvalidMessage,
            "missing field type",
        ));
    };
    let Ok(kind) = serde_json::from_str::<std::borrow::Cow<str>>(kind.get()) else {
        return Err(RequestError::new(
            id,
            ErrorCode::InvalidMessage,
            "type must be a string",
        ));
    };
    match &*kind {
        "subscribe" => match parse_filter(&raw, limits).and_then(|f| Ok((f, parse_options(&raw)?)))
        {
            Ok((filter, options)) => Ok(ClientRequest::Subscribe {
                id,
                filter,
                options,
            }),
            Err(m) => Err(RequestError::new(id, ErrorCode::InvalidMessage, m)),
        },
        "unsubscribe" => {
            if let Some(fid) = raw.filter_id {
                match serde_json::from_str::<String>(fid.get()) {
                    Ok(s) => Ok(ClientRequest::Unsubscribe {
                        id,
                        target: UnsubscribeTarget::FilterId(s),
                    }),
                    Err(_) => Err(RequestError::new(
                        id,
                        ErrorCode::InvalidMessage,
                        "filterId must be a string",
                    )),
                }
            } else {
                match parse_filter(&raw, limits) {
                    Ok(f) => Ok(ClientRequest::Unsubscribe {
                        id,
                        target: UnsubscribeTarget::Fields(f),
                    }),
                    Err(m) => Err(RequestError::new(id, ErrorCode::InvalidMessage, m)),
                }
            }
        }
        "ping" => Ok(ClientRequest::Ping { id }),
        "heartbeat" => Ok(ClientRequest::Heartbeat),
        "getStats" => Ok(ClientRequest::GetStats { id }),
        "publish" => Ok(ClientRequest::Publish { id }),
        "refresh" => match raw.token.map(|t| serde_json::from_str::<String>(t.get())) {
            Some(Ok(token)) if !token.is_empty() => Ok(ClientRequest::Refresh { id, token }),
            _ => Err(RequestError::new(
                id,
                ErrorCode::InvalidMessage,
                "token must be a non-empty string",
            )),
        },
        other => {
            let shown: String = other.chars().take(64).collect();
            Err(RequestError::new(
                id,
                ErrorCode::UnknownType,
                format!("unknown type `{shown}`"),
            ))
        }
    }
}

#[derive(serde::Deserialize)]
struct RawResume {
    epoch: String,
    #[serde(default)]
    streams: std::collections::BTreeMap<String, u64>,
}

fn parse_options(raw: &RawRequest) -> Result<SubscribeOptions, String> {
    let snapshot = match raw.snapshot {
        None => false,
        Some(v) => serde_json::from_str::<bool>(v.get())
            .map_err(|_| "snapshot must be true or false".to_string())?,
    };
    let throttle_ms = match raw.throttle_ms {
        None => 0,
        Some(v) => match serde_json::from_str::<u32>(v.get()) {
            Ok(ms) if THROTTLE_MS_RANGE.contains(&ms) => ms,
            _ => {
                return Err(format!(
                    "throttleMs must be an integer from {} to {}",
                    THROTTLE_MS_RANGE.start(),
                    THROTTLE_MS_RANGE.end()
                ))
            }
        },
    };
    let resume = match raw.resume {
        None => None,
        Some(v) => {
            let r: RawResume = serde_json::from_str(v.get()).map_err(|_| {
                "resume must be {\"epoch\":string,\"streams\":{\"exchange:symbol:dataType\":seq}}".to_string()
            })?;
            Some(Resume {
                epoch: r.epoch,
                streams: r.streams.into_iter().collect(),
            })
        }
    };
    Ok(SubscribeOptions {
        snapshot,
        resume,
        throttle_ms,
    })
}

fn parse_filter(raw: &RawRequest, limits: ParseLimits) -> Result<Filter, String> {
    Ok(Filter {
        exchange: parse_field("exchange", raw.exchange, limits)?,
        symbols: parse_field("symbols", raw.symbols, limits)?,
        data_types: parse_field("dataTypes", raw.data_types, limits)?,
    })
}

fn parse_field(
    name: &str,
    value: Option<&RawValue>,
    limits: ParseLimits,
) -> Result<FieldMatch, String> {
    let Some(value) = value else {
        return Ok(FieldMatch::Any);
    };
    let names: Vec<String> = serde_json::from_str(value.get())
        .map_err(|_| format!("{name} must be an array of strings"))?;
    if names.is_empty() {
        return Err(format!(
            "{name} must not be empty (omit it or use [\"*\"] for all)"
        ));
    }
    for n in &names {
        if n.is_empty() {
            return Err(format!("{name} must not hold an empty string"));
        }
        if n.len() > limits.max_name_bytes {
            return Err(format!(
                "{name} entries are at most {} bytes",
                limits.max_name_bytes
            ));
        }
    }
    Ok(FieldMatch::from_names(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ParseLimits = ParseLimits { max_name_bytes: 16 };

    fn err(text: &str) -> (ErrorCode, String) {
        let e = parse_client(text, L).unwrap_err();
        (e.code, e.message)
    }

    #[test]
    fn subscribe_with_fields_and_wildcards() {
        let r = parse_client(
            r#"{"type":"subscribe","id":1,"exchange":["binance"],"symbols":["*"],"x":1}"#,
            L,
        )
        .unwrap();
        match r {
            ClientRequest::Subscribe { id, filter, .. } => {
                assert_eq!(id.unwrap().get(), "1");
                assert_eq!(filter.exchange.names(), vec!["binance"]);
                assert_eq!(filter.symbols, FieldMatch::Any);
                assert_eq!(filter.data_types, FieldMatch::Any);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subscribe_options() {
        let r = parse_client(
            r#"{"type":"subscribe","snapshot":true,"throttleMs":100,"resume":{"epoch":"e1","streams":{"x:A:trade":7}}}"#,
            L,
        )
        .unwrap();
        let ClientRequest::Subscribe { options, .. } = r else {
            panic!("{r:?}")
        };
        assert!(options.snapshot);
        assert_eq!(options.throttle_ms, 100);
        let resume = options.resume.unwrap();
        assert_eq!(
            (resume.epoch.as_str(), resume.streams),
            ("e1", vec![("x:A:trade".to_string(), 7)])
        );
        for bad in [
            r#"{"type":"subscribe","throttleMs":5}"#,
            r#"{"type":"subscribe","throttleMs":60001}"#,
            r#"{"type":"subscribe","snapshot":"yes"}"#,
            r#"{"type":"subscribe","resume":{"streams":{}}}"#,
            r#"{"type":"subscribe","resume":{"epoch":"e","streams":{"k":-1}}}"#,
        ] {
            assert_eq!(err(bad).0, ErrorCode::InvalidMessage, "{bad}");
        }
    }

    #[test]
    fn error_codes() {
        assert_eq!(err("{nope").0, ErrorCode::InvalidJson);
        assert_eq!(err("[1,2]").0, ErrorCode::InvalidMessage);
        assert_eq!(err(r#"{"id":1}"#).0, ErrorCode::InvalidMessage);
        assert_eq!(err(r#"{"type":"dance"}"#).0, ErrorCode::UnknownType);
        assert_eq!(err(r#"{"type":5}"#).0, ErrorCode::InvalidMessage);
        let (c, m) = err(r#"{"type":"subscribe","symbols":"BTC"}"#);
        assert_eq!(
            (c, m.as_str()),
            (
                ErrorCode::InvalidMessage,
                "symbols must be an array of strings"
            )
        );
        assert_eq!(
            err(r#"{"type":"subscribe","symbols":[]}"#).0,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            err(r#"{"type":"subscribe","symbols":["AAAAAAAAAAAAAAAAAAAAAAAAA"]}"#).0,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            err(r#"{"type":"unsubscribe","filterId":3}"#).0,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            err(r#"{"type":"ping","id":{"a":1}}"#).0,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            err(r#"{"type":"ping","id":1e400}"#).0,
            ErrorCode::InvalidMessage
        );
        let long_id = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(200));
        assert_eq!(err(&long_id).0, ErrorCode::InvalidMessage);
    }

    #[test]
    fn ids_are_echoed_verbatim() {
        match parse_client(r#"{"type":"ping","id":"abc"}"#, L).unwrap() {
            ClientRequest::Ping { id } => assert_eq!(id.unwrap().get(), "\"abc\""),
            other => panic!("{other:?}"),
        }
        let e = parse_client(r#"{"type":"nope","id":7}"#, L).unwrap_err();
        assert_eq!(e.id.unwrap().get(), "7");
    }
}
