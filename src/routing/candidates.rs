//! Which connections could receive a stream that has not been seen yet: every filter is listed
//! under each symbol it names, or as "any symbol", so that a new stream checks those connections'
//! filters instead of every connection's.

use std::collections::HashMap;

use super::filter::{FieldMatch, Filter};
use super::remove_one;

/// Connections (slab keys) by the symbols their filters name. A connection appears once per
/// filter that names the symbol (or matches any symbol), so removing one filter leaves the
/// entries of the others.
#[derive(Debug, Default)]
pub struct Candidates {
    by_symbol: HashMap<Box<str>, Vec<usize>>,
    any_symbol: Vec<usize>,
}

impl Candidates {
    /// Lists `conn` under every symbol `filter` names (or under "any symbol").
    pub fn add(&mut self, filter: &Filter, conn: usize) {
        match &filter.symbols {
            FieldMatch::Any => self.any_symbol.push(conn),
            FieldMatch::OneOf(names) => {
                for name in names.iter() {
                    self.by_symbol.entry(name.clone()).or_default().push(conn);
                }
            }
        }
    }

    /// Takes back one [`add`](Self::add) of `filter` for `conn`.
    pub fn remove(&mut self, filter: &Filter, conn: usize) {
        match &filter.symbols {
            FieldMatch::Any => remove_one(&mut self.any_symbol, conn),
            FieldMatch::OneOf(names) => {
                for name in names.iter() {
                    if let Some(list) = self.by_symbol.get_mut(name) {
                        remove_one(list, conn);
                        if list.is_empty() {
                            self.by_symbol.remove(name);
                        }
                    }
                }
            }
        }
    }

    /// The connections with a filter that may match a stream of `symbol`, ascending, each once.
    /// Every connection whose filters match such a stream is among them; the caller checks the
    /// exchange and data type with the connection's own filters.
    pub fn for_symbol(&self, symbol: &str) -> Vec<usize> {
        let named = self.by_symbol.get(symbol).map_or(&[][..], Vec::as_slice);
        let mut out = Vec::with_capacity(named.len() + self.any_symbol.len());
        out.extend_from_slice(named);
        out.extend_from_slice(&self.any_symbol);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether no filter is listed.
    pub fn is_empty(&self) -> bool {
        self.by_symbol.is_empty() && self.any_symbol.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(sy: &[&str]) -> Filter {
        Filter::from_lists(&["binance"], sy, &[])
    }

    #[test]
    fn a_connection_stays_listed_while_any_of_its_filters_names_the_symbol() {
        let mut c = Candidates::default();
        c.add(&f(&["BTC", "ETH"]), 4);
        c.add(&f(&["BTC"]), 4);
        c.add(&f(&["ETH"]), 2);
        c.add(&f(&[]), 9);
        assert_eq!(c.for_symbol("BTC"), vec![4, 9]);
        assert_eq!(c.for_symbol("ETH"), vec![2, 4, 9]);
        assert_eq!(c.for_symbol("SOL"), vec![9]);
        c.remove(&f(&["BTC", "ETH"]), 4);
        // Its second filter still names BTC.
        assert_eq!(c.for_symbol("BTC"), vec![4, 9]);
        assert_eq!(c.for_symbol("ETH"), vec![2, 9]);
        c.remove(&f(&["BTC"]), 4);
        c.remove(&f(&["ETH"]), 2);
        c.remove(&f(&[]), 9);
        assert!(c.is_empty());
        // Removing what is not there changes nothing.
        c.remove(&f(&["BTC"]), 4);
        assert!(c.is_empty());
    }
}
