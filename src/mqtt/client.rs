//! The node's MQTT 5 client: availability (LWT `offline`, `online` on every connect), retained
//! birth after every connect, reconnect with exponential backoff, and the durable outbox.
//!
//! Design. One task polls the rumqttc event loop (its `poll` is not cancel-safe, so it is never
//! raced in a `select!`). Other stages publish through [`Link::publish`], which never waits: it
//! pushes into the bounded request channel of the current connection or fails with
//! [`MqttError::Busy`] / [`MqttError::NotConnected`] (backpressure, no unbounded growth; callers
//! count and drop what is ephemeral, i.e. replies and stats).
//!
//! What must not be lost goes through the store's outbox: the producer writes the row
//! (`Store::outbox_push`) and calls [`Link::kick_outbox`]; the outbox thread publishes rows at
//! QoS 1 and deletes a row (`outbox_ack`) only when its PUBACK arrived. PUBACKs are matched to rows
//! by packet id: each publish pushed into a connection's request channel gets a tag in a FIFO, in
//! the same order rumqttc reports `Outgoing::Publish(pkid)`. Every connection gets a fresh
//! client/event loop pair, so a disconnect drops the old channel and its tags together and
//! unacknowledged rows are simply sent again after reconnecting (at least once). While
//! disconnected nothing is queued in memory: [`Link::publish`] fails at once (counted in
//! `mqtt.publish_dropped`) and the outbox waits in SQLite.
//!
//! Towards an external broker the node's session is persistent ([`LinkOptions::session_expiry_s`]):
//! the broker keeps its subscriptions across a disconnect, a node restart and (with broker
//! persistence) a broker restart, and queues what kiosks send meanwhile. Kiosks reconnect faster
//! than the node's backoff, so without it every event they had queued during an outage would be
//! published to no subscriber and dropped by the broker.

use super::contract::{Topics, STATUS_OFFLINE, STATUS_ONLINE};
use super::MqttError;
use crate::store::Store;
use crate::telemetry::Metrics;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::Outgoing;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How the node's client connects.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive_s: u64,
    pub credentials: Option<(String, String)>,
    pub reconnect_max_s: u64,
    /// Largest packet accepted from the broker.
    pub max_packet_bytes: usize,
    pub topics: Topics,
    /// Publishes in flight at once from the outbox.
    pub outbox_window: usize,
    /// Capacity of a connection's request channel (the in-memory send queue).
    pub queue_capacity: usize,
    /// TLS towards the broker (`mqtt.tls`, see [`super::tls`]); plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Persistent session (clean start off, this MQTT 5 Session Expiry Interval): the broker keeps
    /// the node's subscriptions while it is away and queues the kiosk messages that arrive
    /// meanwhile (up to its own limit, mosquitto `max_queued_messages`), so events a kiosk sends
    /// while the node reconnects or restarts are delivered, not dropped. `None`: clean start.
    pub session_expiry_s: Option<u32>,
}

/// Session Expiry Interval of the node towards an external broker: a day covers a restart, an
/// upgrade or a network outage; a node gone for longer loses what the broker held for it.
pub const SESSION_EXPIRY_S: u32 = 86_400;

impl LinkOptions {
    pub fn from_config(
        cfg: &crate::config::Config,
        host: &str,
        port: u16,
        credentials: Option<(String, String)>,
    ) -> Self {
        Self {
            client_id: format!("{}-{}", cfg.node.store_id, cfg.node.node_id),
            host: host.to_string(),
            port,
            keep_alive_s: cfg.mqtt.keep_alive_s,
            credentials,
            reconnect_max_s: cfg.mqtt.reconnect_max_s.max(1),
            max_packet_bytes: super::broker::broker_max_payload(cfg.mqtt.max_payload_bytes),
            topics: Topics::from_config(cfg),
            outbox_window: 64,
            // Room for the acknowledgements of a few full ingest batches (1024 events each): after
            // an outage the backlog arrives at once, and an acknowledgement that does not fit is
            // dropped (the kiosk sends the event again). A few MiB at most.
            queue_capacity: 4096,
            tls: None,
            // The embedded broker lives and dies with the node: nothing to keep there.
            session_expiry_s: (cfg.mqtt.broker == crate::config::BrokerMode::External).then_some(SESSION_EXPIRY_S),
        }
    }
}

/// A message received on one of the node's subscriptions.
#[derive(Debug, Clone)]
pub struct InMsg {
    pub topic: String,
    pub payload: Bytes,
    pub properties: Option<PublishProperties>,
    /// When the node received it (for MQTT 5 message expiry and latency).
    pub received: Instant,
}

/// What a pushed publish is, for PUBACK bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Plain,
    Outbox(i64),
    Final,
}

struct Session {
    client: AsyncClient,
    tags: Mutex<VecDeque<Tag>>,
}

enum OutboxMsg {
    Kick,
    Acked(i64),
    Disconnected,
    Stop,
}

struct Shared {
    opts: LinkOptions,
    session: RwLock<Option<Arc<Session>>>,
    birth: Mutex<Bytes>,
    connected: AtomicBool,
    stopping: AtomicBool,
    final_ack: Mutex<Option<oneshot::Sender<()>>>,
    outbox_tx: Mutex<Option<std_mpsc::Sender<OutboxMsg>>>,
    metrics: Arc<Metrics>,
    /// Bumped by the poll task on every event; read by the daemon's watchdog.
    pub heartbeat: AtomicU64,
}

/// Handle to the node's MQTT connection. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

impl Link {
    /// Starts the poll task (on the current tokio runtime) and, when `outbox` is given, the outbox
    /// thread. Incoming messages on `subscriptions` arrive on the returned receiver.
    pub fn start(
        opts: LinkOptions,
        subscriptions: Vec<String>,
        birth: Bytes,
        outbox: Option<Store>,
        metrics: Arc<Metrics>,
        incoming_capacity: usize,
    ) -> Result<(Link, mpsc::Receiver<InMsg>), MqttError> {
        let (in_tx, in_rx) = mpsc::channel(incoming_capacity.max(1));
        let shared = Arc::new(Shared {
            opts,
            session: RwLock::new(None),
            birth: Mutex::new(birth),
            connected: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            final_ack: Mutex::new(None),
            outbox_tx: Mutex::new(None),
            metrics,
            heartbeat: AtomicU64::new(0),
        });
        let link = Link { shared: shared.clone() };
        if let Some(store) = outbox {
            let (tx, rx) = std_mpsc::channel();
            if let Ok(mut g) = shared.outbox_tx.lock() {
                *g = Some(tx);
            }
            let l = link.clone();
            std::thread::Builder::new()
                .name("mqtt-outbox".into())
                .spawn(move || outbox_loop(l, store, rx))
                .map_err(|e| MqttError::Broker(format!("cannot start outbox thread: {e}")))?;
        }
        tokio::spawn(poll_loop(shared, subscriptions, in_tx));
        Ok((link, in_rx))
    }

    pub fn topics(&self) -> &Topics {
        &self.shared.opts.topics
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// A counter bumped on every MQTT event the poll task handles (stage heartbeat).
    pub fn heartbeat(&self) -> u64 {
        self.shared.heartbeat.load(Ordering::Relaxed)
    }

    /// Publishes without waiting: fails with `NotConnected` or `Busy` (queue full).
    pub fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
        properties: Option<PublishProperties>,
    ) -> Result<(), MqttError> {
        self.publish_tagged(Tag::Plain, topic, qos, retain, payload.into(), properties)
    }

    fn publish_tagged(
        &self,
        tag: Tag,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        properties: Option<PublishProperties>,
    ) -> Result<(), MqttError> {
        let Some(session) = self.shared.session.read().ok().and_then(|s| s.clone()) else {
            // Nothing is queued in memory while disconnected: the caller drops what is ephemeral
            // (counted here) and what must not be lost is already in the outbox.
            self.shared.metrics.incr("mqtt.publish_dropped");
            return Err(MqttError::NotConnected);
        };
        let mut tags = session.tags.lock().map_err(|_| MqttError::NotConnected)?;
        tags.push_back(tag);
        let r = match properties {
            Some(p) => session.client.try_publish_with_properties(topic, qos, retain, payload, p),
            None => session.client.try_publish(topic, qos, retain, payload),
        };
        if let Err(e) = r {
            tags.pop_back();
            self.shared.metrics.incr("mqtt.publish_dropped");
            return Err(match e {
                rumqttc::v5::ClientError::TryRequest(_) if self.is_connected() => MqttError::Busy,
                _ => MqttError::NotConnected,
            });
        }
        Ok(())
    }

    /// Replaces the retained birth document and publishes it now (fleet `rebirth`).
    pub fn set_birth(&self, birth: Bytes) {
        if let Ok(mut b) = self.shared.birth.lock() {
            *b = birth;
        }
        self.rebirth();
    }

    /// Republishes the retained birth document (it is also republished after every reconnect).
    pub fn rebirth(&self) {
        let birth = self.shared.birth.lock().map(|b| b.clone()).unwrap_or_default();
        if let Err(e) = self.publish(&self.shared.opts.topics.birth(), QoS::AtLeastOnce, true, birth, None) {
            tracing::warn!(error = %e, "birth not published now; it is republished on reconnect");
        }
    }

    /// Tells the outbox thread that rows are waiting.
    pub fn kick_outbox(&self) {
        if let Ok(g) = self.shared.outbox_tx.lock() {
            if let Some(tx) = g.as_ref() {
                let _ = tx.send(OutboxMsg::Kick);
            }
        }
    }

    fn outbox_send(&self, m: OutboxMsg) {
        if let Ok(g) = self.shared.outbox_tx.lock() {
            if let Some(tx) = g.as_ref() {
                let _ = tx.send(m);
            }
        }
    }

    /// Clean stop: publishes `status` (e.g. `stopped`) retained at QoS 1, waits up to `wait` for its
    /// PUBACK, then disconnects (which makes the broker drop the Last Will).
    pub async fn shutdown(&self, status: &str, wait: Duration) -> bool {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.outbox_send(OutboxMsg::Stop);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut g) = self.shared.final_ack.lock() {
            *g = Some(tx);
        }
        let topic = self.shared.opts.topics.status();
        let sent = self
            .publish_tagged(Tag::Final, &topic, QoS::AtLeastOnce, true, Bytes::from(status.to_string()), None)
            .is_ok();
        let acked = sent && tokio::time::timeout(wait, rx).await.map(|r| r.is_ok()).unwrap_or(false);
        let session = self.shared.session.read().ok().and_then(|s| s.clone());
        if let Some(s) = session {
            let _ = s.client.try_disconnect();
        }
        // Give the event loop a moment to write the DISCONNECT.
        let until = Instant::now() + Duration::from_millis(500);
        while self.is_connected() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acked
    }
}

fn options(opts: &LinkOptions) -> MqttOptions {
    let mut o = MqttOptions::new(opts.client_id.clone(), opts.host.clone(), opts.port);
    o.set_keep_alive(Duration::from_secs(opts.keep_alive_s.max(5)));
    match opts.session_expiry_s {
        Some(s) => {
            o.set_clean_start(false);
            o.set_session_expiry_interval(Some(s));
        }
        None => {
            o.set_clean_start(true);
        }
    }
    o.set_max_packet_size(Some(opts.max_packet_bytes as u32));
    o.set_connection_timeout(5);
    o.set_network_options(super::network_options());
    o.set_transport(super::tls::transport(opts.tls.as_ref()));
    if let Some((u, p)) = &opts.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    o.set_last_will(LastWill::new(opts.topics.status(), STATUS_OFFLINE, QoS::AtLeastOnce, true, None));
    o
}

async fn poll_loop(shared: Arc<Shared>, subscriptions: Vec<String>, in_tx: mpsc::Sender<InMsg>) {
    let initial = Duration::from_millis(250);
    let max = Duration::from_secs(shared.opts.reconnect_max_s);
    let mut backoff = initial;
    let link = Link { shared: shared.clone() };
    let mut ever_connected = false;
    loop {
        if shared.stopping.load(Ordering::SeqCst) && !shared.connected.load(Ordering::SeqCst) && ever_connected {
            return;
        }
        let (client, mut eventloop) = AsyncClient::new(options(&shared.opts), shared.opts.queue_capacity);
        let session = Arc::new(Session { client, tags: Mutex::new(VecDeque::new()) });
        let mut inflight: HashMap<u16, Tag> = HashMap::new();
        loop {
            let ev = eventloop.poll().await;
            shared.heartbeat.fetch_add(1, Ordering::Relaxed);
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(host = %shared.opts.host, port = shared.opts.port, code = ?ack.code, "mqtt connected");
                    backoff = initial;
                    ever_connected = true;
                    if let Ok(mut s) = shared.session.write() {
                        *s = Some(session.clone());
                    }
                    shared.connected.store(true, Ordering::SeqCst);
                    for f in &subscriptions {
                        if let Err(e) = session.client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            tracing::error!(filter = %f, error = %e, "subscribe failed");
                        }
                    }
                    if !shared.stopping.load(Ordering::SeqCst) {
                        let status = shared.opts.topics.status();
                        if let Err(e) = link.publish(&status, QoS::AtLeastOnce, true, STATUS_ONLINE, None) {
                            tracing::warn!(error = %e, "online status not published");
                        }
                        link.rebirth();
                        link.kick_outbox();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let msg = InMsg { topic, payload: p.payload, properties: p.properties, received: Instant::now() };
                    if in_tx.send(msg).await.is_err() {
                        tracing::debug!("incoming receiver gone");
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let tag = session.tags.lock().ok().and_then(|mut t| t.pop_front()).unwrap_or(Tag::Plain);
                    shared.metrics.incr("mqtt.published");
                    if pkid != 0 && tag != Tag::Plain {
                        inflight.insert(pkid, tag);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => match inflight.remove(&ack.pkid) {
                    Some(Tag::Outbox(id)) => link.outbox_send(OutboxMsg::Acked(id)),
                    Some(Tag::Final) => {
                        if let Some(tx) = shared.final_ack.lock().ok().and_then(|mut g| g.take()) {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                },
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    tracing::info!("mqtt disconnecting (clean)");
                    mark_down(&shared, &link);
                    return;
                }
                Ok(Event::Incoming(Packet::Disconnect(d))) => {
                    tracing::warn!(reason = ?d.reason_code, "broker sent DISCONNECT");
                }
                Ok(_) => {}
                Err(e) => {
                    if shared.connected.load(Ordering::SeqCst) {
                        tracing::warn!(error = %e, "mqtt connection lost");
                        shared.metrics.incr("mqtt.disconnects");
                    } else {
                        tracing::debug!(error = %e, backoff_ms = backoff.as_millis() as u64, "mqtt connect failed");
                    }
                    mark_down(&shared, &link);
                    break;
                }
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max);
        shared.metrics.incr("mqtt.reconnects");
    }
}

fn mark_down(shared: &Shared, link: &Link) {
    shared.connected.store(false, Ordering::SeqCst);
    if let Ok(mut s) = shared.session.write() {
        *s = None;
    }
    link.outbox_send(OutboxMsg::Disconnected);
}

fn outbox_loop(link: Link, store: Store, rx: std_mpsc::Receiver<OutboxMsg>) {
    let window = link.shared.opts.outbox_window.max(1);
    let mut inflight: HashSet<i64> = HashSet::new();
    let metrics = link.shared.metrics.clone();
    loop {
        let first = rx.recv_timeout(Duration::from_millis(500));
        let mut msgs = Vec::new();
        match first {
            Ok(m) => msgs.push(m),
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
        msgs.extend(rx.try_iter());
        for m in msgs {
            match m {
                OutboxMsg::Kick => {}
                OutboxMsg::Acked(id) => {
                    inflight.remove(&id);
                    match store.outbox_ack(id) {
                        Ok(()) => metrics.incr("outbox.acked"),
                        Err(e) => tracing::error!(id, error = %e, "outbox ack failed; the row will be sent again"),
                    }
                }
                OutboxMsg::Disconnected => inflight.clear(),
                OutboxMsg::Stop => return,
            }
        }
        if let Ok(n) = store.outbox_len() {
            metrics.set("outbox.backlog", n);
        }
        if !link.is_connected() || inflight.len() >= window {
            continue;
        }
        let rows = match store.outbox_peek(window + inflight.len()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "outbox peek failed");
                continue;
            }
        };
        for row in rows {
            if inflight.len() >= window {
                break;
            }
            if inflight.contains(&row.id) {
                continue;
            }
            let qos = if row.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
            let payload = Bytes::from(row.payload.clone());
            match link.publish_tagged(Tag::Outbox(row.id), &row.topic, qos, row.retain, payload, None) {
                Ok(()) if qos == QoS::AtMostOnce => {
                    // No PUBACK will come: handed to the network is all QoS 0 promises.
                    let _ = store.outbox_ack(row.id);
                }
                Ok(()) => {
                    inflight.insert(row.id);
                }
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(broker: crate::config::BrokerMode) -> crate::config::Config {
        let mut c = crate::config::Config::default();
        c.mqtt.broker = broker;
        c
    }

    #[test]
    fn persistent_session_only_towards_an_external_broker() {
        use crate::config::BrokerMode;
        let ext = LinkOptions::from_config(&cfg(BrokerMode::External), "127.0.0.1", 1883, None);
        assert_eq!(ext.session_expiry_s, Some(SESSION_EXPIRY_S));
        let o = options(&ext);
        assert!(!o.clean_start());
        assert_eq!(o.session_expiry_interval(), Some(SESSION_EXPIRY_S));
        let emb = LinkOptions::from_config(&cfg(BrokerMode::Embedded), "127.0.0.1", 1883, None);
        assert_eq!(emb.session_expiry_s, None);
        assert!(options(&emb).clean_start());
    }

    /// While the broker is unreachable nothing is queued in memory: a publish fails at once and is
    /// counted, and outbox rows stay in SQLite.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disconnected_publish_fails_at_once_and_the_outbox_stays_in_sqlite() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o.db");
        let producer = Store::open(&db, 5000).unwrap();
        for i in 0..100 {
            producer.outbox_push("t/x", format!("m{i}").as_bytes(), 1, false).unwrap();
        }
        let mut opts = LinkOptions::from_config(&cfg(crate::config::BrokerMode::External), "127.0.0.1", port, None);
        opts.reconnect_max_s = 1;
        let metrics = Arc::new(Metrics::default());
        let (link, _rx) =
            Link::start(opts, vec![], Bytes::new(), Some(Store::open(&db, 5000).unwrap()), metrics.clone(), 8).unwrap();
        link.kick_outbox();
        let t0 = Instant::now();
        for _ in 0..1000 {
            let r = link.publish("t/y", QoS::AtLeastOnce, false, Bytes::from_static(b"x"), None);
            assert!(matches!(r, Err(MqttError::NotConnected)), "{r:?}");
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "publishing while disconnected waited");
        assert_eq!(metrics.get("mqtt.publish_dropped"), 1000);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!link.is_connected());
        assert_eq!(producer.outbox_len().unwrap(), 100, "outbox rows must wait in SQLite");
        assert_eq!(metrics.get("outbox.backlog"), 100);
        assert!(metrics.get("mqtt.reconnects") >= 1);
    }
}
