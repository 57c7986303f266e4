use super::{Issues, Validate};
use crate::store::EventKind;
use serde::{Deserialize, Serialize};

/// Answering kiosk recommendation requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Items per reply unless the request asks for fewer (at most `max_k`).
    pub default_k: usize,
    pub max_k: usize,
    /// Interaction kinds whose items are never recommended again to the same user.
    pub exclude_kinds: Vec<EventKind>,
    /// How long replies are remembered to answer QoS 1 redeliveries, in seconds.
    pub reply_cache_s: u64,
    /// Seconds between re-reads of store popularity while events arrive.
    pub refresh_s: u64,
    /// Interaction kinds after which fresh suggestions are pushed to the kiosk (`kiosk/<id>/push`).
    pub push_kinds: Vec<EventKind>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            default_k: 10,
            max_k: 100,
            exclude_kinds: vec![EventKind::Purchase],
            reply_cache_s: 60,
            refresh_s: 5,
            push_kinds: vec![EventKind::Cart, EventKind::Purchase],
        }
    }
}

impl Validate for ServeConfig {
    fn validate(&self, issues: &mut Issues) {
        issues.check(self.default_k >= 1, "serve.default_k", "at least 1");
        issues.check(self.refresh_s >= 1, "serve.refresh_s", "at least 1");
        issues.check(self.max_k >= self.default_k, "serve.max_k", "must be >= serve.default_k");
    }
}
