use super::{Issues, Validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (journald adds its own timestamp).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging: a `tracing` filter with per-module levels, written to stderr (journald under systemd).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// An `EnvFilter` directive, e.g. "info,sgbd_edge::learn=debug". `RUST_LOG` overrides it.
    pub filter: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info,rumqttd=warn,rumqttd::router::routing=off".into(), format: LogFormat::Text }
    }
}

impl Validate for LogConfig {
    fn validate(&self, issues: &mut Issues) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.filter) {
            issues.push("log.filter", format!("not a valid filter: {e}"));
        }
    }
}
