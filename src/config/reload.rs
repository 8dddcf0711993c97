//! Live reload (SIGHUP): which keys changed, which can be applied to a running gateway, and
//! which need a restart (listener addresses, worker count, the feed, the log file).

use std::collections::BTreeMap;

use super::Config;

/// Tables and keys that a running gateway cannot change (a restart applies them).
const RESTART_ONLY: [&str; 5] = ["server.", "feed.", "log.file", "bus.", "upstream"];

/// The outcome of a reload.
#[derive(Debug)]
pub struct Reload {
    /// The configuration to run with: the new one, except for restart-only keys.
    pub config: Config,
    /// Changed keys applied now, as `key: old -> new`.
    pub applied: Vec<String>,
    /// Changed keys that need a restart, as `key: old -> new` (the old value stays in force).
    pub ignored: Vec<String>,
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn flat(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(v) = toml::Value::try_from(config) {
        flatten("", &v, &mut out);
    }
    out
}

/// Compares `old` and `new` and builds the configuration to run with.
pub fn reload(old: &Config, new: Config) -> Reload {
    let (a, b) = (flat(old), flat(&new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let (mut applied, mut ignored) = (Vec::new(), Vec::new());
    let none = "(unset)".to_string();
    for key in keys {
        let (was, now) = (a.get(key).unwrap_or(&none), b.get(key).unwrap_or(&none));
        if was == now {
            continue;
        }
        let line = format!("{key}: {was} -> {now}");
        if RESTART_ONLY.iter().any(|p| key.starts_with(p)) {
            ignored.push(line);
        } else {
            applied.push(line);
        }
    }
    let mut config = new;
    config.server = old.server.clone();
    config.feed = old.feed.clone();
    config.log.file = old.log.file.clone();
    Reload {
        config,
        applied,
        ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigBuilder;

    #[test]
    fn applies_live_keys_and_keeps_restart_only_ones() {
        let old = ConfigBuilder::new().build().unwrap();
        let new = ConfigBuilder::new()
            .set_pair("log.level=debug")
            .unwrap()
            .set_pair("limits.max_connections=7")
            .unwrap()
            .set_pair("server.workers=9")
            .unwrap()
            .build()
            .unwrap();
        let r = reload(&old, new);
        assert_eq!(r.config.log.level, "debug");
        assert_eq!(r.config.limits.max_connections, 7);
        assert_eq!(r.config.server.workers, 0);
        assert!(
            r.applied
                .iter()
                .any(|l| l == "log.level: \"info\" -> \"debug\""),
            "{:?}",
            r.applied
        );
        assert_eq!(r.ignored, vec!["server.workers: 0 -> 9".to_string()]);
    }
}
