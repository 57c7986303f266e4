use super::{Issues, Validate};
use serde::{Deserialize, Serialize};

/// On-device training of the recommender (the learn concern extends this section).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LearnConfig {
    /// Train on the device at all.
    pub enabled: bool,
}

impl Default for LearnConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Validate for LearnConfig {
    fn validate(&self, _issues: &mut Issues) {}
}
