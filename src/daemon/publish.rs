//! The learning loop's [`Publisher`] over the daemon's MQTT link: refreshed suggestions pushed to
//! kiosks (`kiosk/<id>/push`, QoS 1, not retained), fleet model announcements (`<base>/model`,
//! QoS 1 through the durable outbox) and the birth document; and the fleet's `cmd/model-pin`.

use crate::config::Config;
use crate::mqtt::contract::{self, ModelAnnouncement, Push, Topics};
use crate::mqtt::Link;
use crate::online::{NoPublisher, Publisher};
use crate::registry::Registry;
use crate::serve::Recommendation;
use crate::store::Store;
use crate::telemetry::Metrics;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use std::sync::{Arc, Mutex};

/// Publishes through the daemon's MQTT link; announcements go through the store's outbox so a
/// broker outage loses none.
pub struct LinkPublisher {
    link: Link,
    topics: Topics,
    cfg: Config,
    store: Mutex<Store>,
}

impl LinkPublisher {
    pub fn new(cfg: &Config, link: Link) -> Result<Self, crate::store::StoreError> {
        Ok(Self {
            link,
            topics: Topics::from_config(cfg),
            cfg: cfg.clone(),
            store: Mutex::new(crate::store::open_config(cfg)?),
        })
    }
}

impl Publisher for LinkPublisher {
    fn push(&self, kiosk: &str, user: &str, rec: &Recommendation) {
        let p = Push {
            schema_version: contract::SCHEMA_VERSION.into(),
            ts: crate::sys::now_ms(),
            node_id: self.cfg.node.node_id.clone(),
            user: user.to_string(),
            model_version: rec.model_version.clone(),
            fallback: rec.fallback,
            items: rec.items.clone(),
        };
        let payload = serde_json::to_vec(&p).unwrap_or_default();
        if let Err(e) = self.link.publish(&self.topics.kiosk_push(kiosk), QoS::AtLeastOnce, false, payload, None) {
            tracing::debug!(kiosk, error = %e, "push not sent");
        }
    }

    fn announce(&self, a: &ModelAnnouncement) {
        let payload = serde_json::to_vec(a).unwrap_or_default();
        let queued = self.store.lock().map(|s| s.outbox_push(&self.topics.model(), &payload, 1, false));
        match queued {
            Ok(Ok(_)) => self.link.kick_outbox(),
            Ok(Err(e)) => tracing::error!(error = %e, "model announcement not queued"),
            Err(_) => tracing::error!("model announcement not queued (store lock poisoned)"),
        }
    }

    fn model_changed(&self, version: &str) {
        let birth = super::birth(&self.cfg, version);
        self.link.set_birth(Bytes::from(serde_json::to_vec(&birth).unwrap_or_default()));
    }
}

/// Applies a fleet `cmd/model-pin`: pins `version` (activating it) or, with `None`, unpins. The
/// learning loop notices the change within `online.poll_s`, swaps the model in and announces
/// `pinned` / `unpinned` (and `activated` for a pin of another version). Returns the message of
/// the command's result.
pub fn fleet_pin(cfg: &Config, version: &Option<String>, metrics: &Metrics) -> Result<String, String> {
    let res = crate::store::open_config(cfg)
        .map_err(crate::registry::RegistryError::from)
        .and_then(|s| Registry::from_config(cfg).pin(&s, version.as_deref()));
    match res {
        Ok(()) => {
            metrics.incr("online.pin_commands");
            tracing::info!(version = ?version, "fleet model pin applied");
            Ok(match version {
                Some(v) => format!("pinned {v}"),
                None => "unpinned".into(),
            })
        }
        Err(e) => {
            metrics.incr("online.pin_failed");
            tracing::error!(version = ?version, error = %e, "fleet model pin failed");
            Err(e.to_string())
        }
    }
}

/// The daemon's publisher: [`LinkPublisher`] over `link`, or [`NoPublisher`] (with a log line)
/// when the store cannot be opened for the outbox.
pub fn publisher(cfg: &Config, link: &Link) -> Arc<dyn Publisher> {
    match LinkPublisher::new(cfg, link.clone()) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::error!(error = %e, "model announcements and pushes disabled");
            Arc::new(NoPublisher)
        }
    }
}
