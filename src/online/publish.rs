//! What the learning loop tells the outside world, as an interface: refreshed suggestions for
//! kiosks that were active recently, fleet model announcements, a new birth document. The daemon
//! implements it over its MQTT link (`daemon::publish`); tests and benches publish nothing.

use crate::mqtt::contract::ModelAnnouncement;
use crate::serve::Recommendation;

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
