//! Parsing and validating publisher messages: one object per frame, or an array (a batch).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{scan, ErrorCode};

/// A validated market-data message from a publisher, borrowing from the frame's text.
#[derive(Debug)]
pub struct PublishMsg<'a> {
    /// Exchange name.
    pub exchange: Cow<'a, str>,
    /// Symbol.
    pub symbol: Cow<'a, str>,
    /// Data type.
    pub data_type: Cow<'a, str>,
    /// Publisher timestamp in ms, if given.
    pub ts: Option<u64>,
    /// The `data` value, byte for byte as the publisher wrote it.
    pub data: &'a str,
}

/// Why a publisher message (or a whole frame) was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    /// Position in the batch (None for a single message or a frame-level error).
    pub index: Option<usize>,
    /// The protocol error code.
    pub code: ErrorCode,
    /// A human-readable reason.
    pub message: String,
}

#[derive(Deserialize)]
struct RawPublish<'a> {
    #[serde(borrow, default)]
    exchange: Option<&'a RawValue>,
    #[serde(borrow, default)]
    symbol: Option<&'a RawValue>,
    #[serde(rename = "dataType", borrow, default)]
    data_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// The messages of one frame: each valid message, or the error for it.
pub type ParsedFrame<'a> = Vec<Result<PublishMsg<'a>, PublishError>>;

/// Parses one publisher text frame. A frame that is not JSON at all is one error; in a batch,
/// each element is validated on its own so that one bad element does not drop the others.
pub fn parse_publish(text: &str, max_name_bytes: usize) -> Result<ParsedFrame<'_>, PublishError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items = match scan::array(text) {
            Some(items) => items,
            None => serde_json::from_str::<Vec<&RawValue>>(text)
                .map_err(frame_error)?
                .into_iter()
                .map(RawValue::get)
                .collect(),
        };
        if items.is_empty() {
            return Err(PublishError {
                index: None,
                code: ErrorCode::InvalidMessage,
                message: "empty batch".into(),
            });
        }
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                parse_one(item, max_name_bytes).map_err(|mut e| {
                    e.index = Some(i);
                    e
                })
            })
            .collect())
    } else {
        Ok(vec![parse_one(text, max_name_bytes)])
    }
}

fn frame_error(e: serde_json::Error) -> PublishError {
    let code = match e.classify() {
        serde_json::error::Category::Data => ErrorCode::InvalidMessage,
        _ => ErrorCode::InvalidJson,
    };
    PublishError {
        index: None,
        code,
        message: format!("invalid JSON: {e}"),
    }
}

fn invalid(message: impl Into<String>) -> PublishError {
    PublishError {
        index: None,
        code: ErrorCode::InvalidMessage,
        message: message.into(),
    }
}

fn parse_one(text: &str, max_name_bytes: usize) -> Result<PublishMsg<'_>, PublishError> {
    match parse_typed(text, max_name_bytes) {
        Some(msg) => Ok(msg),
        None => parse_fields(text, max_name_bytes),
    }
}

/// One pass for a valid message ([`scan::message`]); `None` for anything else (including a
/// valid message that `parse_fields` would refuse: a `null` data or a bad name).
fn parse_typed(text: &str, max_name_bytes: usize) -> Option<PublishMsg<'_>> {
    let f = scan::message(text)?;
    for (field, value) in [
        ("exchange", f.exchange),
        ("symbol", f.symbol),
        ("dataType", f.data_type),
    ] {
        check_name(field, value, max_name_bytes).ok()?;
    }
    Some(PublishMsg {
        exchange: Cow::Borrowed(f.exchange),
        symbol: Cow::Borrowed(f.symbol),
        data_type: Cow::Borrowed(f.data_type),
        ts: f.ts,
        data: f.data,
    })
}

/// The message field by field, each checked on its own, so that the error says which field is
/// wrong and how.
fn parse_fields(text: &str, max_name_bytes: usize) -> Result<PublishMsg<'_>, PublishError> {
    let raw: RawPublish = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => invalid("message must be a JSON object"),
        _ => frame_error(e),
    })?;
    let exchange = name_field("exchange", raw.exchange, max_name_bytes)?;
    let symbol = name_field("symbol", raw.symbol, max_name_bytes)?;
    let data_type = name_field("dataType", raw.data_type, max_name_bytes)?;
    let ts = match raw.ts {
        None => None,
        Some(v) if v.get() == "null" => None,
        Some(v) => Some(
            serde_json::from_str::<u64>(v.get())
                .map_err(|_| invalid("ts must be a non-negative integer (ms since the epoch)"))?,
        ),
    };
    let data = match raw.data {
        Some(v) => v.get(),
        None => return Err(invalid("missing field data")),
    };
    Ok(PublishMsg {
        exchange,
        symbol,
        data_type,
        ts,
        data,
    })
}

fn name_field<'a>(
    name: &str,
    value: Option<&'a RawValue>,
    max: usize,
) -> Result<Cow<'a, str>, PublishError> {
    let Some(v) = value else {
        return Err(invalid(format!("missing field {name}")));
    };
    let s: Cow<'a, str> = serde_json::from_str(v.get())
        .map_err(|_| invalid(format!("{name} must be a non-empty string")))?;
    check_name(name, &s, max).map_err(invalid)?;
    Ok(s)
}

/// The rules for an exchange, symbol or dataType name: non-empty, at most `max` bytes, no
/// control characters. The error names the field.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} must be a non-empty string"));
    }
    if value.len() > max {
        return Err(format!("{field} is at most {max} bytes"));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(format!("{field} must not hold control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_message_keeps_data_verbatim() {
        let text = r#"{"exchange":"binance","symbol":"BTCUSDT","dataType":"trade","ts":5,"data":{"price":"1.10", "q" : 2}}"#;
        let msgs = parse_publish(text, 64).unwrap();
        let m = msgs[0].as_ref().unwrap();
        assert_eq!(m.data, r#"{"price":"1.10", "q" : 2}"#);
        assert_eq!((m.ts, &*m.symbol), (Some(5), "BTCUSDT"));
    }

    #[test]
    fn batch_validates_each_element() {
        let text = r#"[{"exchange":"a","symbol":"b","dataType":"c","data":1},
                      {"exchange":"","symbol":"b","dataType":"c","data":1},
                      {"exchange":"a","symbol":"b","dataType":"c"},
                      7]"#;
        let msgs = parse_publish(text, 64).unwrap();
        assert!(msgs[0].is_ok());
        let e1 = msgs[1].as_ref().unwrap_err();
        assert_eq!(
            (e1.index, e1.message.as_str()),
            (Some(1), "exchange must be a non-empty string")
        );
        assert_eq!(msgs[2].as_ref().unwrap_err().message, "missing field data");
        assert_eq!(
            msgs[3].as_ref().unwrap_err().code,
            ErrorCode::InvalidMessage
        );
    }

    /// Whatever the one-pass parse accepts, the field-by-field parse accepts the same way;
    /// whatever it refuses is left to the field-by-field parse, which names the problem.
    #[test]
    fn the_one_pass_parse_agrees_with_the_field_by_field_parse() {
        let corpus = [
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":1}"#,
            r#"{"data":{"x":[1,2]},"dataType":"c","symbol":"b","exchange":"a","ts":7}"#,
            r#"{"exchange":"a\u0062","symbol":"b\\n","dataType":"c","data":"s","extra":[1]}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","ts":null,"data":null}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","ts":1.5,"data":1}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","ts":-1,"data":1}"#,
            r#"{"exchange":null,"symbol":"b","dataType":"c","data":1}"#,
            r#"{"exchange":"","symbol":"b","dataType":"c","data":1}"#,
            r#"{"exchange":7,"symbol":"b","dataType":"c","data":1}"#,
            r#"{"exchange":"a","exchange":"a","symbol":"b","dataType":"c","data":1}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c"}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"cccccccccccccccccccc","data":1}"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":1} x"#,
            r#"{"exchange":"a","symbol":"b","dataType":"c","data":}"#,
            r#"[1]"#,
        ];
        let mut typed = 0;
        for text in corpus {
            let fields = parse_fields(text, 16);
            match parse_typed(text, 16) {
                Some(m) => {
                    typed += 1;
                    let f = fields.unwrap_or_else(|e| panic!("{text}: {e:?}"));
                    assert_eq!(
                        (&m.exchange, &m.symbol, &m.data_type, m.ts, m.data),
                        (&f.exchange, &f.symbol, &f.data_type, f.ts, f.data),
                        "{text}"
                    );
                }
                // What the one pass leaves aside is an error, or has escapes for serde_json.
                None => assert!(
                    fields.is_err() || text.contains('\\'),
                    "{text}: refused by the one-pass parse only"
                ),
            }
        }
        assert_eq!(typed, 2, "the first two messages are plain");
        // Escaped names are left to serde_json, which decodes them.
        let m = parse_one(corpus[2], 16).unwrap();
        assert_eq!((&*m.exchange, &*m.symbol), ("ab", "b\\n"));
    }

    #[test]
    fn frame_level_errors() {
        let single = parse_publish("{oops", 64).unwrap();
        assert_eq!(single[0].as_ref().unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(
            parse_publish("[1,", 64).unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_publish("[]", 64).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
        let r = parse_publish("42", 64).unwrap();
        assert_eq!(r[0].as_ref().unwrap_err().code, ErrorCode::InvalidMessage);
        let r = parse_publish(
            r#"{"exchange":"a","symbol":"b","dataType":"c","ts":-1,"data":1}"#,
            64,
        )
        .unwrap();
        assert!(r[0].as_ref().unwrap_err().message.starts_with("ts must be"));
    }

    /// Values that reach the scanner's edges: escapes, number forms, literals, nesting.
    fn edge_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("\"a\\u0041\\n\\/\"".to_string()),
            Just("\"\\ud800\"".to_string()),
            Just("\"\\x\"".to_string()),
            Just("\"tab\tin\"".to_string()),
            Just("\"é€𝄞\"".to_string()),
            "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
            "0[0-9]{1,2}",
            Just(".5".to_string()),
            Just("-".to_string()),
            Just("true".to_string()),
            Just("tru".to_string()),
            Just("null".to_string()),
            Just("nul".to_string()),
            "\"[ -~]{0,8}\"",
            "\"[ -~]{0,40}\"",
            "\"[^\"]{0,40}\"",
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(" , "))),
                proptest::collection::vec(("\"[a-z]{0,3}\"", inner), 0..4).prop_map(|v| {
                    let pairs: Vec<String> =
                        v.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", pairs.join(","))
                }),
            ]
        })
    }

    /// Publisher messages near the valid ones, then maybe one character changed.
    fn near_message() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("\"exchange\"".to_string()),
            Just("\"symbol\"".to_string()),
            Just("\"dataType\"".to_string()),
            Just("\"ts\"".to_string()),
            Just("\"data\"".to_string()),
            Just("\"exch\\u0061nge\"".to_string()),
            "\"[a-z]{1,4}\"",
        ];
        let name = prop_oneof![
            "\"[A-Za-z0-9]{0,20}\"".boxed(),
            Just("\"a\\u0062\"".to_string()).boxed(),
            edge_value().boxed(),
        ];
        let base = (
            name.clone(),
            name.clone(),
            name,
            edge_value(),
            proptest::option::of(edge_value()),
        );
        let message = (
            base,
            proptest::collection::vec((key, edge_value()), 0..3),
            any::<bool>(),
        )
            .prop_map(|((e, s, d, data, ts), extra, spaced)| {
                let mut fields = vec![
                    format!("\"exchange\":{e}"),
                    format!("\"symbol\":{s}"),
                    format!("\"dataType\":{d}"),
                    format!("\"data\":{data}"),
                ];
                if let Some(ts) = ts {
                    fields.push(format!("\"ts\":{ts}"));
                }
                fields.extend(extra.into_iter().map(|(k, v)| format!("{k}:{v}")));
                let sep = if spaced { " ,\n " } else { "," };
                format!("{{{}}}", fields.join(sep))
            });
        (
            message,
            any::<proptest::sample::Index>(),
            0u8..4,
            any::<char>(),
        )
            .prop_map(|(text, at, op, c)| {
                let mut chars: Vec<char> = text.chars().collect();
                let i = at.index(chars.len());
                match op {
                    0 => {
                        chars.remove(i);
                    }
                    1 => chars.insert(i, c),
                    2 => chars[i] = c,
                    _ => {}
                }
                chars.into_iter().collect()
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 5_000, failure_persistence: None, ..Default::default() })]

        /// The fast path never accepts what serde_json refuses, and what it accepts, it reads
        /// the way serde_json does.
        #[test]
        fn the_scanner_agrees_with_serde_json(text in near_message()) {
            if let Some(m) = parse_typed(&text, 16) {
                let f = parse_fields(&text, 16);
                proptest::prop_assert!(f.is_ok(), "{text}: accepted by the scanner only: {f:?}");
                let f = f.unwrap();
                proptest::prop_assert_eq!(
                    (&m.exchange, &m.symbol, &m.data_type, m.ts, m.data),
                    (&f.exchange, &f.symbol, &f.data_type, f.ts, f.data)
                );
            }
            let batch = format!("[{text}, 1 ]");
            if let Some(items) = scan::array(&batch) {
                let raw: Result<Vec<&RawValue>, _> = serde_json::from_str(&batch);
                proptest::prop_assert!(raw.is_ok(), "{batch}: accepted by the scanner only");
                let raw: Vec<&str> = raw.unwrap().into_iter().map(RawValue::get).collect();
                proptest::prop_assert_eq!(items, raw);
            }
        }
    }
}
