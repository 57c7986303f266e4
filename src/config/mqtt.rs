use super::{Issues, Validate};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BrokerMode {
    /// Start an embedded rumqttd on 127.0.0.1 (no ACLs: loopback or trusted segment only).
    #[default]
    Embedded,
    /// Connect to an external broker (mosquitto, EMQX) at `host:port`.
    External,
}

/// TLS towards an external broker. Paths may point into `$CREDENTIALS_DIRECTORY`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificate (PEM) that signed the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS; both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// MQTT: broker, identity, topics and limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub broker: BrokerMode,
    pub host: String,
    pub port: u16,
    /// Topic prefix; topics are `<prefix>/<store_id>/<node_id>/...`.
    pub topic_prefix: String,
    /// Username for an external broker.
    pub username: Option<String>,
    /// Name of the environment variable holding the password (never the password itself).
    pub password_env: Option<String>,
    /// File holding the password, e.g. a systemd credential `%d/mqtt-password`.
    pub password_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    pub keep_alive_s: u64,
    /// Largest accepted incoming payload in bytes; larger ones get an error reply.
    pub max_payload_bytes: usize,
    /// Interval of the `stats` telemetry message.
    pub stats_interval_s: u64,
    /// Upper bound of the reconnect backoff.
    pub reconnect_max_s: u64,
    /// Forward newly ingested kiosk events to the fleet on `<base>/events` (QoS 1, durable outbox).
    pub forward_events: bool,
    /// Recommendation requests a second per kiosk (token bucket); 0 turns the limit off.
    /// Over-limit requests get a `rate_limited` error reply and bump `serve.rate_limited`.
    pub kiosk_rate_per_s: f64,
    /// Requests a kiosk may send at once before the rate applies (bucket size).
    pub kiosk_burst: u32,
    /// Events a second per kiosk (token bucket); 0 turns the limit off. Over-limit events are
    /// not stored and get a `rate_limited` error reply (the kiosk sends them again later).
    pub kiosk_event_rate_per_s: f64,
    /// Events a kiosk may send at once: room for the backlog a kiosk sends after an outage.
    pub kiosk_event_burst: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            broker: BrokerMode::Embedded,
            host: "127.0.0.1".into(),
            port: 1883,
            topic_prefix: "sgbd".into(),
            username: None,
            password_env: None,
            password_file: None,
            tls: None,
            keep_alive_s: 30,
            max_payload_bytes: 64 * 1024,
            stats_interval_s: 60,
            reconnect_max_s: 30,
            forward_events: true,
            kiosk_rate_per_s: 20.0,
            kiosk_burst: 40,
            kiosk_event_rate_per_s: 50.0,
            kiosk_event_burst: 3000,
        }
    }
}

impl Validate for MqttConfig {
    fn validate(&self, issues: &mut Issues) {
        issues.check(!self.host.is_empty(), "mqtt.host", "must not be empty");
        issues.check(self.port != 0, "mqtt.port", "must be 1..65535");
        issues.check(
            !self.topic_prefix.is_empty() && !self.topic_prefix.contains(['#', '+']),
            "mqtt.topic_prefix",
            "must be non-empty and contain no wildcards",
        );
        issues.check(self.keep_alive_s >= 5, "mqtt.keep_alive_s", "at least 5");
        issues.check(self.reconnect_max_s >= 1, "mqtt.reconnect_max_s", "at least 1");
        issues.check(
            self.port < u16::MAX || self.broker != BrokerMode::Embedded,
            "mqtt.port",
            "the embedded broker also listens on port + 1 (MQTT 3.1.1)",
        );
        issues.check(
            self.tls.is_none() || self.broker == BrokerMode::External,
            "mqtt.tls",
            "TLS is for an external broker (the embedded one listens on loopback without TLS)",
        );
        issues.check(
            self.kiosk_rate_per_s.is_finite() && (0.0..=100_000.0).contains(&self.kiosk_rate_per_s),
            "mqtt.kiosk_rate_per_s",
            "between 0 (off) and 100000",
        );
        issues.check(self.kiosk_burst >= 1, "mqtt.kiosk_burst", "at least 1");
        issues.check(
            self.kiosk_event_rate_per_s.is_finite() && (0.0..=100_000.0).contains(&self.kiosk_event_rate_per_s),
            "mqtt.kiosk_event_rate_per_s",
            "between 0 (off) and 100000",
        );
        issues.check(self.kiosk_event_burst >= 1, "mqtt.kiosk_event_burst", "at least 1");
        issues.check(self.stats_interval_s >= 1, "mqtt.stats_interval_s", "at least 1");
        issues.check(
            (256..=16 * 1024 * 1024).contains(&self.max_payload_bytes),
            "mqtt.max_payload_bytes",
            "between 256 and 16777216",
        );
        if self.broker == BrokerMode::Embedded {
            let loopback = self.host.parse::<std::net::IpAddr>().map(|a| a.is_loopback()).unwrap_or(false);
            issues.check(
                loopback,
                "mqtt.host",
                "the embedded broker has no topic ACLs and binds loopback only: use 127.0.0.1 or ::1",
            );
        }
        if let Some(tls) = &self.tls {
            issues.check(tls.ca_file.is_some(), "mqtt.tls.ca_file", "required with [mqtt.tls]");
            issues.check(
                tls.client_cert.is_some() == tls.client_key.is_some(),
                "mqtt.tls.client_cert",
                "client_cert and client_key go together",
            );
        }
        if self.password_env.is_some() || self.password_file.is_some() {
            issues.check(self.username.is_some(), "mqtt.username", "a password needs a username");
        }
        issues.check(
            !(self.password_env.is_some() && self.password_file.is_some()),
            "mqtt.password_env",
            "password_env and password_file are exclusive",
        );
    }
}
