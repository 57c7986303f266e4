//! The versioned MQTT contract (topics, payloads), the embedded broker, the client with its
//! durable outbox, and a kiosk client (used by `sgbd-edge kiosk`, the demo, tests and benches).
//! See `docs/mqtt.md`.

pub mod broker;
pub mod client;
pub mod contract;
pub mod kiosk;
pub mod probe;
pub mod ratelimit;
pub mod subscriber;
pub mod tls;

pub use client::{InMsg, Link, LinkOptions};
pub use contract::Topics;

/// Errors of the MQTT concern.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("broker: {0}")]
    Broker(String),
    #[error("not connected to the broker")]
    NotConnected,
    #[error("send queue full")]
    Busy,
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("bad reply: {0}")]
    BadReply(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("tls: {0}")]
    Tls(String),
}

/// The broker password named by the config (`password_env` or `password_file`), if any.
pub fn credentials(cfg: &crate::config::MqttConfig) -> Result<Option<(String, String)>, MqttError> {
    let Some(user) = &cfg.username else { return Ok(None) };
    let pass = if let Some(var) = &cfg.password_env {
        std::env::var(var).map_err(|_| MqttError::Credentials(format!("environment variable {var} is not set")))?
    } else if let Some(path) = &cfg.password_file {
        std::fs::read_to_string(path)
            .map_err(|e| MqttError::Credentials(format!("cannot read {}: {e}", path.display())))?
            .trim_end_matches(['\n', '\r'])
            .to_string()
    } else {
        String::new()
    };
    Ok(Some((user.clone(), pass)))
}

/// TCP options for every client here: `TCP_NODELAY`, because request/reply traffic is many small
/// packets and Nagle's algorithm with delayed ACKs adds tens of milliseconds per round trip.
pub fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n.set_connection_timeout(5);
    n
}
