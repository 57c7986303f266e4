//! A kiosk client speaking the contract: MQTT 5 (Response Topic + Correlation Data + Message
//! Expiry) or MQTT 3.1.1 (`reply_to` / `request_id` in the JSON). Used by `sgbd-edge kiosk`, the
//! demo kiosk, the tests and `bench serve`.

use super::contract::{self, EventMsg, RecommendRequest, Topics, SCHEMA_VERSION};
use super::subscriber::{self, V4Loop, V5Loop};
use super::MqttError;
use crate::sys::now_ms;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// MQTT protocol level of a kiosk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V311,
}

impl Protocol {
    /// `5` or `3.1.1`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::V5 => "5",
            Protocol::V311 => "3.1.1",
        }
    }
}

/// A reply as received: the JSON, and the MQTT 5 correlation data if any.
#[derive(Debug, Clone)]
pub struct KioskReply {
    pub json: serde_json::Value,
    pub correlation: Option<Bytes>,
    pub topic: String,
}

impl KioskReply {
    /// The error code, when the reply is an error reply.
    pub fn error_code(&self) -> Option<&str> {
        self.json.get("error").and_then(|e| e.get("code")).and_then(|c| c.as_str())
    }
}

/// A persistent kiosk session (see [`KioskClient::connect_session`]).
#[derive(Debug, Clone)]
pub struct KioskSession {
    /// Stable client id (the broker finds the session by it); empty: one is made up.
    pub client_id: String,
    /// MQTT 5 Session Expiry Interval; MQTT 3.1.1 sessions last as long as the broker keeps them.
    pub expiry_s: u32,
}

enum Inner {
    V5(rumqttc::v5::AsyncClient),
    V4(rumqttc::AsyncClient),
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<KioskReply>>>>;

/// A connected kiosk.
pub struct KioskClient {
    inner: Inner,
    pending: Pending,
    topics: Topics,
    kiosk: String,
    reply_topic: String,
    seq: AtomicU64,
    prefix: String,
    task: tokio::task::JoinHandle<()>,
    /// When the current connection was acknowledged (`None` while disconnected).
    up_since: UpSince,
}

type UpSince = Arc<Mutex<Option<std::time::Instant>>>;

/// Pause after a connection error before the event loop reconnects.
const BACKOFF: Duration = Duration::from_millis(200);

fn set_up(up: &UpSince, v: bool) {
    if let Ok(mut g) = up.lock() {
        match (v, g.is_some()) {
            (true, false) => *g = Some(std::time::Instant::now()),
            (false, _) => *g = None,
            _ => {}
        }
    }
}

impl Drop for KioskClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key_of(json: &serde_json::Value, corr: Option<&Bytes>) -> Option<String> {
    if let Some(c) = corr {
        return Some(String::from_utf8_lossy(c).into_owned());
    }
    json.get("request_id").and_then(|v| v.as_str()).map(str::to_string)
}

fn deliver(pending: &Pending, topic: String, payload: &[u8], corr: Option<Bytes>) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    let Some(key) = key_of(&json, corr.as_ref()) else {
        return;
    };
    let tx = pending.lock().ok().and_then(|mut p| p.remove(&key));
    if let Some(tx) = tx {
        let _ = tx.send(KioskReply { json, correlation: corr, topic });
    }
}

impl KioskClient {
    /// Connects to `host:port` (the v5 or the 3.1.1 listener, matching `protocol`), subscribes to
    /// the kiosk's reply topic and waits until the subscription is acknowledged.
    pub async fn connect(
        host: &str,
        port: u16,
        topics: Topics,
        kiosk: &str,
        protocol: Protocol,
        credentials: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<KioskClient, MqttError> {
        Self::connect_tls(host, port, topics, kiosk, protocol, credentials, None, timeout).await
    }

    /// [`KioskClient::connect`] over TLS when `tls` is given (see [`super::tls::client_config`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn connect_tls(
        host: &str,
        port: u16,
        topics: Topics,
        kiosk: &str,
        protocol: Protocol,
        credentials: Option<(String, String)>,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<KioskClient, MqttError> {
        Self::connect_session(host, port, topics, kiosk, protocol, credentials, tls, None, timeout).await
    }

    /// [`KioskClient::connect_tls`], with a persistent session when `session` is given: the broker
    /// keeps the kiosk's subscription and queued replies while it is away, and the client sends
    /// the QoS 1 publishes it still holds (queued or unacknowledged) again after a reconnect. What
    /// the kiosk publishes while the broker is down waits in its bounded request queue
    /// (capacity 1024; a publish then waits for room).
    #[allow(clippy::too_many_arguments)]
    pub async fn connect_session(
        host: &str,
        port: u16,
        topics: Topics,
        kiosk: &str,
        protocol: Protocol,
        credentials: Option<(String, String)>,
        tls: Option<Arc<rustls::ClientConfig>>,
        session: Option<KioskSession>,
        timeout: Duration,
    ) -> Result<KioskClient, MqttError> {
        let transport = super::tls::transport(tls.as_ref());
        let reply_topic = topics.kiosk_reply(kiosk);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let client_id = match &session {
            Some(s) if !s.client_id.is_empty() => s.client_id.clone(),
            _ => format!("kiosk-{kiosk}-{}-{}", std::process::id(), now_ms() % 1_000_000),
        };
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let p = pending.clone();
        let up: UpSince = Arc::default();
        let up2 = up.clone();
        let on_link = move |v| set_up(&up2, v);
        let (inner, task) = match protocol {
            Protocol::V5 => {
                use rumqttc::v5::{AsyncClient, MqttOptions};
                let mut o = MqttOptions::new(client_id, host, port);
                o.set_keep_alive(Duration::from_secs(30));
                o.set_max_packet_size(Some(16 << 20));
                o.set_network_options(super::network_options());
                o.set_transport(transport.clone());
                if let Some((u, pw)) = credentials {
                    o.set_credentials(u, pw);
                }
                if let Some(s) = &session {
                    o.set_clean_start(false);
                    o.set_session_expiry_interval(Some(s.expiry_s));
                }
                let (client, el) = AsyncClient::new(o, 1024);
                let l = V5Loop(client.clone(), el);
                let task = subscriber::spawn(l, reply_topic.clone(), ready_tx, BACKOFF, on_link, move |r| {
                    deliver(&p, r.topic, &r.payload, r.correlation)
                });
                (Inner::V5(client), task)
            }
            Protocol::V311 => {
                use rumqttc::{AsyncClient, MqttOptions};
                let mut o = MqttOptions::new(client_id, host, port);
                o.set_keep_alive(Duration::from_secs(30));
                o.set_max_packet_size(16 << 20, 16 << 20);
                o.set_transport(transport.clone());
                if let Some((u, pw)) = credentials {
                    o.set_credentials(u, pw);
                }
                if session.is_some() {
                    // The client id is never empty here, so this cannot panic.
                    o.set_clean_session(false);
                }
                let (client, mut el) = AsyncClient::new(o, 1024);
                el.set_network_options(super::network_options());
                let l = V4Loop(client.clone(), el);
                let task = subscriber::spawn(l, reply_topic.clone(), ready_tx, BACKOFF, on_link, move |r| {
                    deliver(&p, r.topic, &r.payload, None)
                });
                (Inner::V4(client), task)
            }
        };
        let client = KioskClient {
            inner,
            pending,
            topics,
            kiosk: kiosk.to_string(),
            reply_topic,
            seq: AtomicU64::new(0),
            prefix: format!("{kiosk}-{:x}", now_ms()),
            task,
            up_since: up,
        };
        match tokio::time::timeout(timeout, ready_rx).await {
            Ok(Ok(())) => Ok(client),
            _ => Err(MqttError::Timeout(timeout)),
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self.inner {
            Inner::V5(_) => Protocol::V5,
            Inner::V4(_) => Protocol::V311,
        }
    }

    /// How long the current broker connection has been up (`None` while disconnected). A kiosk
    /// that got no acknowledgement sends an event again only once it has been connected for a
    /// while: before that, the event may still sit in its queue.
    pub fn connected_for(&self) -> Option<Duration> {
        self.up_since.lock().ok().and_then(|g| g.map(|t| t.elapsed()))
    }

    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }

    /// A fresh request id / correlation id.
    pub fn next_id(&self) -> String {
        format!("{}-{}", self.prefix, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Publishes raw bytes at QoS 1 (fire and forget).
    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>) -> Result<(), MqttError> {
        match &self.inner {
            Inner::V5(c) => c
                .publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|_| MqttError::NotConnected),
            Inner::V4(c) => {
                c.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await.map_err(|_| MqttError::NotConnected)
            }
        }
    }

    /// Sends `payload` to `topic` and waits for the reply carrying `id` (correlation data on
    /// MQTT 5, `request_id` on 3.1.1; the payload must already hold `request_id`/`reply_to` there).
    /// `expiry_s` sets the MQTT 5 Message Expiry Interval.
    pub async fn request_raw(
        &self,
        topic: &str,
        payload: Vec<u8>,
        id: &str,
        expiry_s: Option<u32>,
        timeout: Duration,
    ) -> Result<KioskReply, MqttError> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id.to_string(), tx);
        }
        let sent = match &self.inner {
            Inner::V5(c) => {
                let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                    response_topic: Some(self.reply_topic.clone()),
                    correlation_data: Some(Bytes::from(id.to_string())),
                    message_expiry_interval: expiry_s,
                    ..Default::default()
                };
                c.publish_with_properties(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload, props)
                    .await
                    .is_ok()
            }
            Inner::V4(c) => c.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await.is_ok(),
        };
        let res = if !sent {
            Err(MqttError::NotConnected)
        } else {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(r)) => Ok(r),
                _ => Err(MqttError::Timeout(timeout)),
            }
        };
        if res.is_err() {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(id);
            }
        }
        res
    }

    fn with_reply_fields(&self, mut v: serde_json::Value, id: &str) -> serde_json::Value {
        if self.protocol() == Protocol::V311 {
            v["request_id"] = serde_json::Value::String(id.to_string());
            v["reply_to"] = serde_json::Value::String(self.reply_topic.clone());
        }
        v
    }

    /// Asks for `k` recommendations for `user`.
    pub async fn recommend(&self, user: &str, k: Option<usize>, timeout: Duration) -> Result<KioskReply, MqttError> {
        let id = self.next_id();
        let req = RecommendRequest {
            schema_version: SCHEMA_VERSION.into(),
            ts: now_ms(),
            user: user.into(),
            k,
            exclude: vec![],
            node_id: Some(self.kiosk.clone()),
            reply_to: None,
            request_id: None,
            expires_at: None,
            ttl_ms: Some(timeout.as_millis() as u64),
        };
        let v =
            self.with_reply_fields(serde_json::to_value(&req).map_err(|e| MqttError::BadReply(e.to_string()))?, &id);
        let expiry = Some(timeout.as_secs().max(1) as u32);
        self.request_raw(&self.topics.kiosk_recommend(&self.kiosk), v.to_string().into_bytes(), &id, expiry, timeout)
            .await
    }

    /// Sends an interaction and, when `ack_timeout` is given, waits for the node's acknowledgement
    /// (sent after the event is committed). Returns `None` without an acknowledgement.
    pub async fn event(
        &self,
        event_id: &str,
        user: &str,
        sku: &str,
        kind: &str,
        ack_timeout: Option<Duration>,
    ) -> Result<Option<KioskReply>, MqttError> {
        let msg = EventMsg {
            schema_version: SCHEMA_VERSION.into(),
            ts: now_ms(),
            event_id: event_id.into(),
            user: user.into(),
            sku: sku.into(),
            kind: kind.into(),
            node_id: Some(self.kiosk.clone()),
            reply_to: None,
            request_id: None,
        };
        let topic = self.topics.kiosk_events(&self.kiosk);
        let v = serde_json::to_value(&msg).map_err(|e| MqttError::BadReply(e.to_string()))?;
        match ack_timeout {
            None => self.publish_raw(&topic, v.to_string().into_bytes()).await.map(|_| None),
            Some(t) => {
                let id = self.next_id();
                let v = self.with_reply_fields(v, &id);
                self.request_raw(&topic, v.to_string().into_bytes(), &id, None, t).await.map(Some)
            }
        }
    }
}

/// Decodes a recommendation reply (or reports the error reply it is).
pub fn parse_reply(r: &KioskReply) -> Result<contract::RecommendReply, MqttError> {
    if let Some(code) = r.error_code() {
        return Err(MqttError::BadReply(format!("error reply: {code}: {}", r.json["error"]["message"])));
    }
    serde_json::from_value(r.json.clone()).map_err(|e| MqttError::BadReply(e.to_string()))
}
