//! Micro-benchmarks of the per-message work: parsing a publisher message, encoding its data
//! frame once, and matching filters. Run with `cargo bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tickfan::protocol::outbound;
use tickfan::protocol::publish::parse_publish;
use tickfan::routing::{FieldMatch, Filter, StreamKey};

const MSG: &str = r#"{"exchange":"binance","symbol":"BTCUSDT","dataType":"trade","ts":1732300000123,"data":{"price":"50000.1","qty":"0.01","side":"buy","tradeId":123456}}"#;

fn publish_path(c: &mut Criterion) {
    c.bench_function("parse_publish_single", |b| {
        b.iter(|| black_box(parse_publish(black_box(MSG), 64).unwrap().len()))
    });
    let key = StreamKey::new("binance", "BTCUSDT", "trade");
    let prefix = outbound::data_prefix(&key);
    let data = r#"{"price":"50000.1","qty":"0.01","side":"buy","tradeId":123456}"#;
    c.bench_function("encode_data_frame", |b| {
        b.iter(|| {
            black_box(outbound::data_frame(
                &prefix,
                black_box(42),
                1_732_300_000_123,
                data,
            ))
        })
    });
}

fn matching(c: &mut Criterion) {
    let names = |v: &[&str]| FieldMatch::from_names(v.iter().map(|s| s.to_string()).collect());
    let filters: Vec<Filter> = (0..10_000)
        .map(|i| match i % 3 {
            0 => Filter {
                exchange: names(&["binance"]),
                symbols: names(&[&format!("S{i}")]),
                data_types: FieldMatch::Any,
            },
            1 => Filter {
                exchange: FieldMatch::Any,
                symbols: names(&["BTCUSDT", "ETHUSDT"]),
                data_types: names(&["trade"]),
            },
            _ => Filter {
                exchange: names(&["kraken"]),
                symbols: FieldMatch::Any,
                data_types: names(&["ticker", "depth"]),
            },
        })
        .collect();
    let key = StreamKey::new("binance", "BTCUSDT", "trade");
    c.bench_function("match_10000_filters", |b| {
        b.iter(|| {
            black_box(
                filters
                    .iter()
                    .filter(|f| f.matches(black_box(&key)))
                    .count(),
            )
        })
    });
}

criterion_group!(benches, publish_path, matching);
criterion_main!(benches);
