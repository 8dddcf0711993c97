//! The `channels` claim: `exchange/symbol/dataType` patterns (each part a name or `*`) that
//! bound what a user may subscribe to.

use crate::routing::filter::{FieldMatch, Filter};

/// One permitted pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    parts: [Option<Box<str>>; 3],
}

impl ChannelPattern {
    /// Parses `exchange/symbol/dataType`; `*` (or a missing trailing part) means any.
    pub fn parse(text: &str) -> Result<ChannelPattern, String> {
        let mut it = text.split('/');
        let mut parts: [Option<Box<str>>; 3] = [None, None, None];
        for p in parts.iter_mut() {
            match it.next() {
                None | Some("*") => {}
                Some("") => return Err(format!("empty part in channel pattern `{text}`")),
                Some(name) => *p = Some(name.into()),
            }
        }
        if it.next().is_some() {
            return Err(format!(
                "channel pattern `{text}` has more than three parts"
            ));
        }
        Ok(ChannelPattern { parts })
    }

    fn allows(
        &self,
        exchange: Option<&str>,
        symbol: Option<&str>,
        data_type: Option<&str>,
    ) -> bool {
        // `None` on the filter side means "any name": only a `*` part allows it.
        [exchange, symbol, data_type]
            .iter()
            .zip(&self.parts)
            .all(|(want, part)| match (part, want) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(p), Some(w)) => &**p == *w,
            })
    }
}

fn names(m: &FieldMatch) -> Vec<Option<&str>> {
    match m {
        FieldMatch::Any => vec![None],
        FieldMatch::OneOf(v) => v.iter().map(|s| Some(&**s)).collect(),
    }
}

/// Whether every stream `filter` can match is covered by some pattern: each combination of
/// its names (a wildcard field counts as "any name") must be allowed by one pattern.
pub fn filter_allowed(filter: &Filter, patterns: &[ChannelPattern]) -> bool {
    let (ex, sy, dt) = (
        names(&filter.exchange),
        names(&filter.symbols),
        names(&filter.data_types),
    );
    ex.iter().all(|e| {
        sy.iter().all(|s| {
            dt.iter()
                .all(|d| patterns.iter().any(|p| p.allows(*e, *s, *d)))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(ex: &[&str], sy: &[&str], dt: &[&str]) -> Filter {
        Filter::from_lists(ex, sy, dt)
    }

    #[test]
    fn patterns_bound_filters() {
        let p: Vec<ChannelPattern> = ["binance/*/trade", "kraken/BTCUSDT"]
            .iter()
            .map(|t| ChannelPattern::parse(t).unwrap())
            .collect();
        assert!(filter_allowed(
            &f(&["binance"], &["BTCUSDT", "ETHUSDT"], &["trade"]),
            &p
        ));
        assert!(filter_allowed(&f(&["binance"], &[], &["trade"]), &p));
        assert!(filter_allowed(&f(&["kraken"], &["BTCUSDT"], &[]), &p));
        assert!(!filter_allowed(
            &f(&["binance"], &["BTCUSDT"], &["ticker"]),
            &p
        ));
        assert!(!filter_allowed(&f(&["binance"], &[], &[]), &p));
        assert!(!filter_allowed(&f(&[], &["BTCUSDT"], &["trade"]), &p));
        assert!(!filter_allowed(
            &f(&["binance", "okx"], &["BTCUSDT"], &["trade"]),
            &p
        ));
        assert!(ChannelPattern::parse("a/b/c/d").is_err());
        assert!(ChannelPattern::parse("a//c").is_err());
    }
}
