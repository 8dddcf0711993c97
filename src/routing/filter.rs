//! Subscription filters: one field match per stream-key part, normalised so equal filters
//! compare equal.

use std::sync::Arc;

/// A stream's identity: (exchange, symbol, dataType).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// Exchange name, e.g. `binance`.
    pub exchange: Box<str>,
    /// Symbol, e.g. `BTCUSDT`.
    pub symbol: Box<str>,
    /// Data type, e.g. `trade`.
    pub data_type: Box<str>,
}

impl StreamKey {
    /// Builds a key from its parts.
    pub fn new(exchange: &str, symbol: &str, data_type: &str) -> Arc<StreamKey> {
        Arc::new(StreamKey {
            exchange: exchange.into(),
            symbol: symbol.into(),
            data_type: data_type.into(),
        })
    }
}

/// Matches one part of a stream key: anything, or one of a sorted set of names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldMatch {
    /// Missing field or `"*"`: matches every name, including names that appear later.
    Any,
    /// One of these names (sorted, deduplicated, never empty).
    OneOf(Box<[Box<str>]>),
}

impl FieldMatch {
    /// Builds a match from the names a client gave; `"*"` anywhere makes it [`FieldMatch::Any`].
    pub fn from_names(mut names: Vec<String>) -> FieldMatch {
        if names.iter().any(|n| n == "*") {
            return FieldMatch::Any;
        }
        names.sort_unstable();
        names.dedup();
        FieldMatch::OneOf(names.into_iter().map(String::into_boxed_str).collect())
    }

    /// Whether `name` matches.
    #[inline]
    pub fn matches(&self, name: &str) -> bool {
        match self {
            FieldMatch::Any => true,
            FieldMatch::OneOf(names) if names.len() <= 8 => names.iter().any(|n| &**n == name),
            FieldMatch::OneOf(names) => names.binary_search_by(|n| (**n).cmp(name)).is_ok(),
        }
    }

    /// The names as the client sees them in replies (`["*"]` for any).
    pub fn names(&self) -> Vec<&str> {
        match self {
            FieldMatch::Any => vec!["*"],
            FieldMatch::OneOf(names) => names.iter().map(|n| &**n).collect(),
        }
    }
}

/// A subscription filter: a stream matches when all three fields match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Exchanges.
    pub exchange: FieldMatch,
    /// Symbols.
    pub symbols: FieldMatch,
    /// Data types.
    pub data_types: FieldMatch,
}

impl Filter {
    /// A filter that matches every stream.
    pub fn any() -> Filter {
        Filter {
            exchange: FieldMatch::Any,
            symbols: FieldMatch::Any,
            data_types: FieldMatch::Any,
        }
    }

    /// A filter from name lists, an empty list meaning any name (for tests, benches and tools).
    pub fn from_lists(exchange: &[&str], symbols: &[&str], data_types: &[&str]) -> Filter {
        let field = |names: &[&str]| {
            if names.is_empty() {
                FieldMatch::Any
            } else {
                FieldMatch::from_names(names.iter().map(|s| s.to_string()).collect())
            }
        };
        Filter {
            exchange: field(exchange),
            symbols: field(symbols),
            data_types: field(data_types),
        }
    }

    /// Whether the stream matches this filter.
    #[inline]
    pub fn matches(&self, key: &StreamKey) -> bool {
        self.symbols.matches(&key.symbol)
            && self.data_types.matches(&key.data_type)
            && self.exchange.matches(&key.exchange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_and_wildcard_fields() {
        let f = Filter {
            exchange: FieldMatch::from_names(names(&["binance"])),
            symbols: FieldMatch::from_names(names(&["ETHUSDT", "BTCUSDT", "BTCUSDT"])),
            data_types: FieldMatch::from_names(names(&["trade", "*"])),
        };
        assert!(f.matches(&StreamKey::new("binance", "BTCUSDT", "trade")));
        assert!(f.matches(&StreamKey::new("binance", "ETHUSDT", "newtype")));
        assert!(!f.matches(&StreamKey::new("kraken", "BTCUSDT", "trade")));
        assert!(!f.matches(&StreamKey::new("binance", "SOLUSDT", "trade")));
        assert_eq!(f.symbols.names(), vec!["BTCUSDT", "ETHUSDT"]);
        assert_eq!(f.data_types, FieldMatch::Any);
    }

    #[test]
    fn large_sets_use_binary_search() {
        let many: Vec<String> = (0..100).map(|i| format!("S{i:03}")).collect();
        let m = FieldMatch::from_names(many);
        assert!(m.matches("S000") && m.matches("S050") && m.matches("S099"));
        assert!(!m.matches("S100") && !m.matches(""));
    }

    #[test]
    fn normalised_filters_compare_equal() {
        let a = FieldMatch::from_names(names(&["b", "a"]));
        let b = FieldMatch::from_names(names(&["a", "b", "a"]));
        assert_eq!(a, b);
    }
}
