//! Building a [`Config`]: the TOML file, then dotted-key overrides (`--set`), then strict
//! deserialisation (errors name the key) and validation.

use std::path::Path;

use super::{Config, ConfigError, FeedKind};

/// Builds a [`Config`] from a file and overrides.
#[derive(Debug, Default)]
pub struct ConfigBuilder {
    table: toml::Table,
    from_file: bool,
}

impl ConfigBuilder {
    /// Starts from the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a TOML file as the base.
    pub fn file(mut self, path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        self.table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: shown,
                message: e.to_string(),
            })?;
        self.from_file = true;
        Ok(self)
    }

    /// Sets one key by its dotted name (`limits.max_connections`). The value is read as TOML
    /// (`100`, `true`, `["a","b"]`, `"text"`); a value that is not TOML is taken as a string.
    pub fn set(mut self, dotted: &str, value: &str) -> Result<Self, ConfigError> {
        let parts: Vec<&str> = dotted.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::key(dotted, "empty segment in key name"));
        }
        let parsed = parse_toml_value(value);
        let mut table = &mut self.table;
        for part in &parts[..parts.len() - 1] {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => return Err(ConfigError::key(dotted, format!("`{part}` is not a table"))),
            };
        }
        table.insert(parts[parts.len() - 1].to_string(), parsed);
        Ok(self)
    }

    /// Like [`set`](Self::set) with `key=value` in one string, as `--set` gives it.
    pub fn set_pair(self, pair: &str) -> Result<Self, ConfigError> {
        match pair.split_once('=') {
            Some((k, v)) => self.set(k.trim(), v.trim()),
            None => Err(ConfigError::key(pair, "expected key=value")),
        }
    }

    /// Deserialises and validates.
    pub fn build(self) -> Result<Config, ConfigError> {
        let value = toml::Value::Table(self.table);
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Key {
                key,
                reason: e.into_inner().to_string().trim().to_string(),
            }
        })?;
        if config.feed.source.is_none() {
            config.feed.source = Some(if self.from_file {
                FeedKind::None
            } else {
                FeedKind::Synthetic
            });
        }
        config.validate()?;
        Ok(config)
    }
}

fn parse_toml_value(text: &str) -> toml::Value {
    let wrapped = format!("v = {text}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.to_string())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;

    fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_table() && key != "backpressure.policy_by_data_type" {
                    keys(&key, v, out);
                } else {
                    out.push(key);
                }
            }
        }
    }

    #[test]
    fn example_config_is_valid_and_lists_every_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tickfan.example.toml");
        let config = ConfigBuilder::new()
            .file(Path::new(path))
            .unwrap()
            .build()
            .unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let mut all = Vec::new();
        keys(
            "",
            &toml::Value::try_from(Config::default()).unwrap(),
            &mut all,
        );
        for key in all {
            let leaf = key.rsplit('.').next().unwrap();
            let listed = text.contains(&format!("{leaf} =")) || text.contains(&format!("[{key}]"));
            assert!(listed, "example config lacks {key}");
        }
        // Its values are the defaults (the feed is off in a config file).
        assert_eq!(
            config.limits.max_connections,
            Config::default().limits.max_connections
        );
        assert_eq!(config.backpressure.policy_for("ticker"), Policy::Conflate);
    }
}
