use super::{Issues, Validate};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The SQLite store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Database file; relative paths are under `node.data_dir`.
    pub path: PathBuf,
    /// How long a writer waits for a lock before giving up, in milliseconds.
    pub busy_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("sgbd.db"), busy_timeout_ms: 5000 }
    }
}

impl Validate for StoreConfig {
    fn validate(&self, issues: &mut Issues) {
        issues.check(!self.path.as_os_str().is_empty(), "store.path", "must not be empty");
        issues.check(self.busy_timeout_ms <= 600_000, "store.busy_timeout_ms", "at most 600000");
    }
}
