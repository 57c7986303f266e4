//! The one typed TOML configuration file.
//!
//! Every section lives in its own file and is owned by the concern it configures. Unknown keys are
//! rejected (`deny_unknown_fields`), every key has a default compiled in, and [`validate_str`]
//! reports every problem it can find (key path, line, message) rather than the first one only.

mod capture;
mod denoise;
mod learn;
mod log;
mod mqtt;
mod node;
mod online;
mod serve;
mod store;

pub use capture::{CameraConfig, CameraKind, CaptureConfig, SlotConfig};
pub use denoise::DenoiseConfig;
pub use learn::LearnConfig;
pub use log::{LogConfig, LogFormat};
pub use mqtt::{BrokerMode, MqttConfig, TlsConfig};
pub use node::NodeConfig;
pub use online::{OnlineConfig, OnlineModel};
pub use serve::ServeConfig;
pub use store::StoreConfig;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The annotated default configuration, as printed by `sgbd-edge print-default-config`.
pub const ANNOTATED_DEFAULT: &str = include_str!("../../firmware-config/default.toml");

/// Exit code for a bad configuration file (sysexits EX_CONFIG).
pub const EX_CONFIG: u8 = 78;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub log: LogConfig,
    pub store: StoreConfig,
    pub mqtt: MqttConfig,
    pub serve: ServeConfig,
    pub learn: LearnConfig,
    pub online: OnlineConfig,
    pub denoise: DenoiseConfig,
    pub capture: CaptureConfig,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `mqtt.port`; empty when the problem is the file's syntax.
    pub key: String,
    /// 1-based line, where the parser or a search of the source can tell it.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = if self.key.is_empty() { "<file>" } else { &self.key };
        match self.line {
            Some(l) => write!(f, "line {l}: {key}: {}", self.message),
            None => write!(f, "{key}: {}", self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {} problem(s):\n{}", .issues.len(), render(.issues))]
    Invalid { path: PathBuf, issues: Vec<ConfigIssue> },
}

fn render(issues: &[ConfigIssue]) -> String {
    issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n")
}

/// Collects semantic problems; each section implements [`Validate`].
#[derive(Default)]
pub struct Issues(pub Vec<ConfigIssue>);

impl Issues {
    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue { key: key.into(), line: None, message: message.into() });
    }
    /// Adds a problem when `ok` is false.
    pub fn check(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.push(key, message);
        }
    }
}

/// Semantic checks a section runs after it parsed (ranges, consistency between keys).
pub trait Validate {
    fn validate(&self, issues: &mut Issues);
}

impl Validate for Config {
    fn validate(&self, issues: &mut Issues) {
        self.node.validate(issues);
        self.log.validate(issues);
        self.store.validate(issues);
        self.mqtt.validate(issues);
        self.serve.validate(issues);
        self.learn.validate(issues);
        self.online.validate(issues);
        self.denoise.validate(issues);
        self.capture.validate(issues);
    }
}

impl Config {
    /// Reads, parses and validates a file. Relative paths in the file stay relative to the
    /// working directory (as systemd's `WorkingDirectory=` sets it).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        validate_str(&src).map_err(|issues| ConfigError::Invalid { path: path.to_path_buf(), issues })
    }

    /// A stable hash of the effective configuration (published in the birth document).
    pub fn hash(&self) -> String {
        let text = toml::to_string(self).unwrap_or_default();
        crate::sys::sha256_hex(text.as_bytes())[..16].to_string()
    }

    /// Directory for the database, model registry and spool files.
    pub fn data_dir(&self) -> &Path {
        &self.node.data_dir
    }
}

/// Parses and validates configuration text, returning every problem found.
pub fn validate_str(src: &str) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let table: toml::Table = match toml::from_str(src) {
        Ok(t) => t,
        Err(e) => {
            issues.push(ConfigIssue {
                key: String::new(),
                line: e.span().map(|s| line_of(src, s.start)),
                message: e.message().trim().to_string(),
            });
            return Err(issues);
        }
    };
    // Parse section by section so that a problem in one section does not hide another's.
    let known = ["node", "log", "store", "mqtt", "serve", "learn", "online", "denoise", "capture"];
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            issues.push(ConfigIssue {
                key: key.clone(),
                line: find_key_line(src, None, key),
                message: format!("unknown section or key; expected one of: {}", known.join(", ")),
            });
        }
    }
    let mut cfg = Config::default();
    macro_rules! section {
        ($name:ident) => {
            if let Some(v) = table.get(stringify!($name)) {
                if let Some(s) = parse_section(src, stringify!($name), v, &mut issues) {
                    cfg.$name = s;
                }
            }
        };
    }
    section!(node);
    section!(log);
    section!(store);
    section!(mqtt);
    section!(serve);
    section!(learn);
    section!(online);
    section!(denoise);
    section!(capture);
    // Sections that failed to parse kept their (valid) defaults, so semantic checks on the rest
    // still run: one pass shows every problem.
    {
        let mut sem = Issues::default();
        cfg.validate(&mut sem);
        for mut i in sem.0 {
            let (section, leaf) = match i.key.split_once('.') {
                Some((s, rest)) => (Some(s), rest.rsplit('.').next().unwrap_or(rest)),
                None => (None, i.key.as_str()),
            };
            i.line = find_key_line(src, section, leaf);
            issues.push(i);
        }
    }
    if issues.is_empty() {
        Ok(cfg)
    } else {
        Err(issues)
    }
}

/// Parses one section. On failure, each key is tried alone (the others defaulted) so that every
/// bad key is named, not only the first one serde meets.
fn parse_section<T: serde::de::DeserializeOwned>(
    src: &str,
    section: &str,
    value: &toml::Value,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    let err = match value.clone().try_into::<T>() {
        Ok(s) => return Some(s),
        Err(e) => e,
    };
    let mut found = false;
    let mut good = toml::Table::new();
    if let toml::Value::Table(t) = value {
        for (k, v) in t {
            let mut one = toml::Table::new();
            one.insert(k.clone(), v.clone());
            match toml::Value::Table(one).try_into::<T>() {
                Ok(_) => {
                    good.insert(k.clone(), v.clone());
                }
                Err(e) => {
                    found = true;
                    issues.push(ConfigIssue {
                        key: format!("{section}.{k}"),
                        line: find_key_line(src, Some(section), k),
                        message: e.message().trim().to_string(),
                    });
                }
            }
        }
    }
    if !found {
        // Only a combination of keys is wrong (or a required key is missing).
        issues.push(ConfigIssue {
            key: section.to_string(),
            line: find_key_line(src, None, section),
            message: err.message().trim().to_string(),
        });
        return None;
    }
    // The keys that are fine on their own, so that semantic checks still see them.
    toml::Value::Table(good).try_into::<T>().ok()
}

fn line_of(src: &str, byte: usize) -> usize {
    src[..byte.min(src.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Best-effort line of `key = ...` inside `[section]` (or `[section.*]`), or of the `[key]` header.
fn find_key_line(src: &str, section: Option<&str>, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (n, raw) in src.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            current = line.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if section.is_none() && current == key {
                return Some(n + 1);
            }
            continue;
        }
        let in_section = match section {
            None => current.is_empty(),
            Some(s) => current == s || current.starts_with(&format!("{s}.")),
        };
        if in_section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    return Some(n + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotated_default_parses_to_the_compiled_default() {
        let cfg = validate_str(ANNOTATED_DEFAULT).expect("annotated default must be valid");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn reports_every_problem_with_key_and_line() {
        let src = "[node]\nstore_id = \"s1\"\nbogus = 1\n\n[mqtt]\nport = \"x\"\n\n[nope]\na = 1\n";
        let issues = validate_str(src).unwrap_err();
        assert!(issues.iter().any(|i| i.key == "node.bogus" && i.line == Some(3)), "{issues:?}");
        assert!(issues.iter().any(|i| i.key == "mqtt.port" && i.line == Some(6)), "{issues:?}");
        assert!(issues.iter().any(|i| i.key == "nope" && i.line == Some(8)), "{issues:?}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let issues = validate_str("[node]\nstore_id = \n").unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].line, Some(2));
    }
}
