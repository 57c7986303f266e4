use super::{Issues, Validate};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Who this appliance is, and where it keeps its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Store identifier, the second level of every MQTT topic.
    pub store_id: String,
    /// Node identifier, unique within the store; also the MQTT client id prefix.
    pub node_id: String,
    /// Directory for the database, model registry and spool files.
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { store_id: "demo-store".into(), node_id: "edge-1".into(), data_dir: PathBuf::from("./var") }
    }
}

fn is_topic_safe(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Validate for NodeConfig {
    fn validate(&self, issues: &mut Issues) {
        issues.check(is_topic_safe(&self.store_id), "node.store_id", "must be non-empty [A-Za-z0-9_-]");
        issues.check(is_topic_safe(&self.node_id), "node.node_id", "must be non-empty [A-Za-z0-9_-]");
        issues.check(!self.data_dir.as_os_str().is_empty(), "node.data_dir", "must not be empty");
    }
}
