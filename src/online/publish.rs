//! What the learning loop tells the outside world: refreshed suggestions pushed to kiosks that
//! were active recently (`kiosk/<id>/push`, QoS 1, not retained), a fleet model announcement
//! (`<base>/model`, QoS 1 through the durable outbox), a new birth document; and the fleet's
//! `cmd/model-pin` command.

use super::Result;
use crate::config::Config;
use crate::mqtt::contract::{self, Push, Topics};
use crate::mqtt::Link;
use crate::registry::Registry;
use crate::serve::Recommendation;
use crate::store::Store;
use crate::telemetry::Metrics;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// A model announcement (`<base>/model`): what changed and the offline metrics behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAnnouncement {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    pub store_id: String,
    /// `promoted`, `rejected`, `pinned`, `activated` (rollback / manual activation).
    pub event: String,
    pub version: String,
    #[serde(default)]
    pub parent: Option<String>,
    pub metrics: serde_json::Value,
}

/// Where the learning loop publishes (the daemon's MQTT link, or nothing in tests and benches).
pub trait Publisher: Send + Sync {
    /// Refreshed suggestions for `user` at `kiosk`.
    fn push(&self, kiosk: &str, user: &str, rec: &Recommendation);
    /// A model announcement for the fleet.
    fn announce(&self, a: &ModelAnnouncement);
    /// The served model changed (republish the birth document).
    fn model_changed(&self, _version: &str) {}
}

/// Publishes nothing.
pub struct NoPublisher;

impl Publisher for NoPublisher {
    fn push(&self, _: &str, _: &str, _: &Recommendation) {}
    fn announce(&self, _: &ModelAnnouncement) {}
}

/// Publishes through the daemon's MQTT link; announcements go through the store's outbox so a
/// broker outage loses none.
pub struct LinkPublisher {
    link: Link,
    topics: Topics,
    cfg: Config,
    store: Mutex<Store>,
}

impl LinkPublisher {
    pub fn new(cfg: &Config, link: Link) -> Result<Self> {
        Ok(Self {
            link,
            topics: Topics::from_config(cfg),
            cfg: cfg.clone(),
            store: Mutex::new(crate::store::open_config(cfg)?),
        })
    }

    /// Topic of model announcements.
    pub fn model_topic(topics: &Topics) -> String {
        format!("{}/model", topics.base)
    }
}

impl Publisher for LinkPublisher {
    fn push(&self, kiosk: &str, user: &str, rec: &Recommendation) {
        let p = Push {
            schema_version: contract::SCHEMA_VERSION.into(),
            ts: contract::now_ms(),
            node_id: self.cfg.node.node_id.clone(),
            user: user.to_string(),
            model_version: rec.model_version.clone(),
            fallback: rec.fallback,
            items: rec.items.clone(),
        };
        let payload = serde_json::to_vec(&p).unwrap_or_default();
        if let Err(e) = self
            .link
            .publish(&self.topics.kiosk_push(kiosk), QoS::AtLeastOnce, false, payload, None)
        {
            tracing::debug!(kiosk, error = %e, "push not sent");
        }
    }

    fn announce(&self, a: &ModelAnnouncement) {
        let payload = serde_json::to_vec(a).unwrap_or_default();
        let queued = self
            .store
            .lock()
            .map(|s| s.outbox_push(&Self::model_topic(&self.topics), &payload, 1, false));
        match queued {
            Ok(Ok(_)) => self.link.kick_outbox(),
            Ok(Err(e)) => tracing::error!(error = %e, "model announcement not queued"),
            Err(_) => tracing::error!("model announcement not queued (store lock poisoned)"),
        }
    }

    fn model_changed(&self, version: &str) {
        let birth = crate::daemon::birth(&self.cfg, version);
        self.link
            .set_birth(Bytes::from(serde_json::to_vec(&birth).unwrap_or_default()));
    }
}

/// Payload of `cmd/model-pin`: `version` pins (and activates) it; `null` or absent unpins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinCommand {
    pub schema_version: String,
    pub ts: i64,
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Handles a fleet `cmd/model-pin` payload; the learning loop notices the change and swaps.
pub fn fleet_pin(cfg: &Config, payload: &[u8], metrics: &Metrics) {
    let cmd: PinCommand = match contract::decode(payload, 64 << 10) {
        Ok(c) => c,
        Err(e) => {
            metrics.incr("mqtt.malformed");
            tracing::warn!(error = %e.message, "cmd/model-pin refused");
            return;
        }
    };
    let res = crate::store::open_config(cfg)
        .map_err(crate::registry::RegistryError::from)
        .and_then(|s| Registry::from_config(cfg).pin(&s, cmd.version.as_deref()));
    match res {
        Ok(()) => {
            metrics.incr("online.pin_commands");
            tracing::info!(version = ?cmd.version, "fleet model pin applied");
        }
        Err(e) => {
            metrics.incr("online.pin_failed");
            tracing::error!(version = ?cmd.version, error = %e, "fleet model pin failed");
        }
    }
}

/// The daemon's publisher: [`LinkPublisher`] over `link`, or [`NoPublisher`] (with a log line)
/// when the store cannot be opened for the outbox.
pub fn daemon_publisher(cfg: &Config, link: &Link) -> std::sync::Arc<dyn Publisher> {
    match LinkPublisher::new(cfg, link.clone()) {
        Ok(p) => std::sync::Arc::new(p),
        Err(e) => {
            tracing::error!(error = %e, "model announcements and pushes disabled");
            std::sync::Arc::new(NoPublisher)
        }
    }
}
