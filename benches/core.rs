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

fn fan_out(c: &mut Criterion) {
    use tickfan::net::outqueue::OutQueue;
    let key = StreamKey::new("binance", "BTCUSDT", "trade");
    let frame = outbound::data_frame(&outbound::data_prefix(&key), 1, 1, r#"{"p":"1"}"#);
    let mut queues: Vec<OutQueue> = (0..10_000).map(|_| OutQueue::new()).collect();
    let mut sink = std::io::sink();
    c.bench_function("fan_out_one_frame_to_10000_queues", |b| {
        b.iter(|| {
            for q in queues.iter_mut() {
                q.push_data(frame.clone(), 0, 0);
            }
            // Drain so the queues do not grow across iterations (writes to a sink).
            for q in queues.iter_mut() {
                black_box(q.write_to(&mut sink, |_| {}).unwrap());
            }
        })
    });
}

fn timer_wheel(c: &mut Criterion) {
    use tickfan::timer::TimerWheel;
    c.bench_function("timer_wheel_insert_expire_10000", |b| {
        let mut now = 0u64;
        let mut wheel: TimerWheel<u64> = TimerWheel::new(now);
        let mut out = Vec::with_capacity(10_000);
        b.iter(|| {
            for i in 0..10_000u64 {
                wheel.insert(now + 1 + (i % 50), i);
            }
            now += 51;
            out.clear();
            wheel.expire(now, &mut out);
            black_box(out.len())
        })
    });
    c.bench_function("timer_wheel_next_timeout_sparse", |b| {
        let mut wheel: TimerWheel<u64> = TimerWheel::new(0);
        // Heartbeat-like: 10,000 timers 20 s out, spread over 100 ms.
        for i in 0..10_000u64 {
            wheel.insert(20_000 + i % 100, i);
        }
        b.iter(|| black_box(wheel.next_timeout(black_box(5))))
    });
}

criterion_group!(benches, publish_path, matching, fan_out, timer_wheel);
criterion_main!(benches);
