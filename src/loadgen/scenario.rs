//! The named load scenarios (issue 7's table) and how subscribers map to streams.

use std::time::Duration;

/// A load scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (`light`, `moderate`, `heavy`, `broadcast`, `connect`).
    pub name: String,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Streams published to (symbols `S0`, `S1`, ... on exchange `bench`, dataType `trade`).
    pub streams: usize,
    /// Streams each subscriber subscribes to (all when equal to `streams`).
    pub streams_per_subscriber: usize,
    /// Messages published per second, over all streams.
    pub rate: u64,
    /// Bytes of padding in each message's data.
    pub payload_bytes: usize,
    /// How long to publish.
    pub duration: Duration,
    /// Only open and hold connections (no subscriptions, no publishing).
    pub connect_only: bool,
    /// Connections in their handshake at once (like that many clients connecting in a loop).
    pub concurrency: usize,
}

impl Scenario {
    /// The named preset.
    pub fn preset(name: &str) -> Option<Scenario> {
        let base = |subs, streams, per, rate| Scenario {
            name: name.to_string(),
            subscribers: subs,
            streams,
            streams_per_subscriber: per,
            rate,
            payload_bytes: 100,
            duration: Duration::from_secs(10),
            connect_only: false,
            concurrency: super::run::DEFAULT_CONCURRENCY,
        };
        Some(match name {
            "light" => base(1_000, 100, 10, 200),
            "moderate" => base(1_000, 100, 10, 1_000),
            "heavy" => base(200, 100, 100, 2_000),
            "broadcast" => base(5_000, 1, 1, 20),
            "connect" => Scenario {
                connect_only: true,
                ..base(15_000, 1, 1, 0)
            },
            _ => return None,
        })
    }

    /// The streams subscriber `i` subscribes to: `streams_per_subscriber` of them, spread so
    /// that every stream has the same number of subscribers.
    pub fn streams_of(&self, i: usize) -> Vec<usize> {
        if self.streams_per_subscriber >= self.streams {
            return (0..self.streams).collect();
        }
        let step = self.streams / self.streams_per_subscriber.max(1);
        (0..self.streams_per_subscriber)
            .map(|k| (i + k * step) % self.streams)
            .collect()
    }

    /// Deliveries per second the scenario asks of the server.
    pub fn deliveries_per_sec(&self) -> f64 {
        self.rate as f64
            * self.subscribers as f64
            * self.streams_per_subscriber.min(self.streams) as f64
            / self.streams.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_issue_table() {
        let light = Scenario::preset("light").unwrap();
        assert_eq!(light.deliveries_per_sec(), 20_000.0);
        assert_eq!(
            Scenario::preset("moderate").unwrap().deliveries_per_sec(),
            100_000.0
        );
        assert_eq!(
            Scenario::preset("heavy").unwrap().deliveries_per_sec(),
            400_000.0
        );
        assert_eq!(
            Scenario::preset("broadcast").unwrap().deliveries_per_sec(),
            100_000.0
        );
        // Every stream gets the same number of subscribers.
        let mut per_stream = vec![0; 100];
        for i in 0..1000 {
            let s = light.streams_of(i);
            assert_eq!(s.len(), 10);
            for x in s {
                per_stream[x] += 1;
            }
        }
        assert!(per_stream.iter().all(|&n| n == 100));
        assert!(Scenario::preset("nope").is_none());
    }
}
