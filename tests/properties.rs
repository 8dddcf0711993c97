//! Property-based tests: the client and publisher parsers never panic and always answer with a
//! well-formed error; arbitrary bytes after a handshake never crash the server, get an RFC 6455
//! close code or an error reply, and leave other clients unaffected.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use proptest::prelude::*;
use tickfan::protocol::client::{parse_client, ParseLimits};
use tickfan::protocol::publish::parse_publish;

const LIMITS: ParseLimits = ParseLimits { max_name_bytes: 64 };

/// JSON-ish text: mostly near-valid messages, so the parser's deeper paths are reached.
fn jsonish() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("\"type\"".to_string()),
        Just("\"id\"".to_string()),
        Just("\"exchange\"".to_string()),
        Just("\"symbols\"".to_string()),
        Just("\"dataTypes\"".to_string()),
        Just("\"filterId\"".to_string()),
        Just("\"symbol\"".to_string()),
        Just("\"dataType\"".to_string()),
        Just("\"data\"".to_string()),
        Just("\"ts\"".to_string()),
        Just("\"token\"".to_string()),
        "\"[a-z]{0,6}\"",
    ];
    let value = prop_oneof![
        Just("\"subscribe\"".to_string()),
        Just("\"unsubscribe\"".to_string()),
        Just("\"ping\"".to_string()),
        Just("\"refresh\"".to_string()),
        Just("[\"*\"]".to_string()),
        Just("[]".to_string()),
        Just("null".to_string()),
        Just("-1".to_string()),
        Just("1e400".to_string()),
        "\"[ -~]{0,80}\"",
        "[0-9]{1,25}",
        "\\[\"[A-Z]{0,5}\"(,\"[A-Z]{0,70}\"){0,3}\\]",
        "\\{[ -~]{0,20}\\}",
    ];
    let pair = (field, value).prop_map(|(k, v)| format!("{k}:{v}"));
    prop_oneof![
        prop::collection::vec(pair, 0..8).prop_map(|p| format!("{{{}}}", p.join(","))),
        prop::collection::vec(
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("\"exchange\"".to_string()),
                        Just("\"symbol\"".to_string()),
                        Just("\"dataType\"".to_string()),
                        Just("\"data\"".to_string())
                    ],
                    "\"[ -~]{0,10}\"",
                )
                    .prop_map(|(k, v)| format!("{k}:{v}")),
                0..5
            )
            .prop_map(|p| format!("{{{}}}", p.join(","))),
            0..5
        )
        .prop_map(|items| format!("[{}]", items.join(","))),
        "[ -~]{0,200}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn client_parser_never_panics_and_errors_are_well_formed(text in jsonish()) {
        if let Err(e) = parse_client(&text, LIMITS) {
            prop_assert!(!e.code.as_str().is_empty());
            prop_assert!(!e.message.is_empty());
            if let Some(id) = e.id {
                // An echoed id is always valid JSON.
                prop_assert!(serde_json::from_str::<serde_json::Value>(id.get()).is_ok());
            }
        }
    }

    #[test]
    fn publisher_parser_never_panics_and_keeps_data_verbatim(text in jsonish()) {
        match parse_publish(&text, 64) {
            Err(e) => prop_assert!(!e.message.is_empty()),
            Ok(items) => {
                for item in items {
                    match item {
                        Ok(m) => {
                            prop_assert!(!m.exchange.is_empty() && m.exchange.len() <= 64);
                            prop_assert!(serde_json::from_str::<serde_json::Value>(m.data).is_ok());
                            prop_assert!(text.contains(m.data));
                        }
                        Err(e) => prop_assert!(!e.message.is_empty()),
                    }
                }
            }
        }
    }
}

/// Bytes a hostile client might send after the handshake: random, or frame-shaped.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        any::<u8>(),
        0u8..=127,
        any::<[u8; 4]>(),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(b0, len, mask, payload)| {
            let mut f = vec![b0, 0x80 | len];
            f.extend_from_slice(&mask);
            f.extend_from_slice(&payload);
            f
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(frame, 1..6).prop_map(|fs| fs.concat()),
    ]
}

#[test]
fn arbitrary_bytes_never_break_the_server() {
    let server = common::start(&["server.workers=2", "heartbeat.close_timeout_ms=200"]);
    let addr = server.public_addr().unwrap();
    let mut bystander = common::Client::subscriber(&server);
    bystander.subscribe(1, &["x"], &[], &[]);
    let config = ProptestConfig {
        cases: 150,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&hostile_bytes(), |bytes| {
            let mut s = common::raw_ws(addr);
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let _ = s.write_all(&bytes);
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            // Whatever came back is server frames: text replies or a close with an RFC code.
            let mut rest = &got[..];
            while !rest.is_empty() {
                let frame = tickfan::loadgen::wire::server_frame(rest);
                prop_assert!(frame.is_some(), "truncated frame");
                let Some((op, a, b)) = frame else { break };
                let payload = &rest[a..b];
                prop_assert!(matches!(op, 0x1 | 0x8 | 0x9 | 0xA), "opcode {op}");
                if op == 0x8 && payload.len() >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    prop_assert!(
                        [1000, 1001, 1002, 1007, 1008, 1009].contains(&code),
                        "close code {code}"
                    );
                }
                if op == 0x1 {
                    prop_assert!(serde_json::from_slice::<serde_json::Value>(payload).is_ok());
                }
                rest = &rest[b..];
            }
            Ok(())
        })
        .unwrap();
    // The server and the other client are fine.
    let mut p = common::Client::publisher(&server);
    p.send(&common::msg("x", "A", "trade", serde_json::json!(1)));
    assert_eq!(bystander.recv_type("data")["seq"], 1);
    let stats = server.stats();
    assert!(stats.workers.iter().all(|w| w.loop_turns > 0));
    assert_eq!(stats.active_connections, 1, "{stats:?}");
}
