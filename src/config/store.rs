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
    /// Kiosk events are refused (`internal`, send again later) while less than this is free on
    /// the data directory's disk, so the database never fills it; serving goes on from memory.
    pub min_free_bytes: u64,
    /// A file of this size kept in the data directory and deleted when the disk is found full,
    /// so that the database can still open, checkpoint and shrink its WAL (0: no reserve).
    pub reserve_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("sgbd.db"),
            busy_timeout_ms: 5000,
            min_free_bytes: 64 << 20,
            reserve_bytes: 16 << 20,
        }
    }
}

impl Validate for StoreConfig {
    fn validate(&self, issues: &mut Issues) {
        issues.check(!self.path.as_os_str().is_empty(), "store.path", "must not be empty");
        issues.check(self.busy_timeout_ms <= 600_000, "store.busy_timeout_ms", "at most 600000");
    }
}
