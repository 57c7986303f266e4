//! MQTT clients of the tests: a kiosk that waits until the daemon answers, an observing MQTT 5
//! client that records everything on its filters, and the node's link options on loopback.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use sgbd_edge::mqtt::kiosk::{KioskClient, Protocol};
use sgbd_edge::mqtt::{LinkOptions, Topics};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::daemon::topics;

/// Connects a kiosk and waits until the daemon answers a request (the daemon is up).
pub async fn kiosk_when_ready(port: u16, kiosk: &str, protocol: Protocol) -> KioskClient {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(k) =
            KioskClient::connect("127.0.0.1", port, topics(), kiosk, protocol, None, Duration::from_secs(2)).await
        {
            if k.recommend("probe", Some(1), Duration::from_millis(500)).await.is_ok() {
                return k;
            }
        }
        assert!(Instant::now() < until, "daemon did not answer on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    pub props: Option<PublishProperties>,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// An MQTT 5 client that records everything on its filters.
pub struct Observer {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Msg>,
    /// Messages received but not asked for yet.
    backlog: std::collections::VecDeque<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observer {
    /// Connects (retrying until `timeout`) and waits for the subscriptions to be acknowledged.
    /// `session_expiry_s` > 0 with `clean = false` keeps the session across disconnects.
    pub async fn connect(port: u16, id: &str, filters: &[String], clean: bool, session_expiry_s: u32) -> Observer {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_start(clean);
        o.set_max_packet_size(Some(16 << 20));
        if session_expiry_s > 0 {
            o.set_session_expiry_interval(Some(session_expiry_s));
        }
        let (client, mut el) = AsyncClient::new(o, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let c = client.clone();
        let filters = filters.to_vec();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut pending = 0usize;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        pending = filters.len();
                        for f in &filters {
                            let _ = c.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        pending = pending.saturating_sub(1);
                        if pending == 0 {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Msg {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload,
                            retain: p.retain,
                            props: p.properties,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), ready_rx).await.expect("observer subscribed").unwrap();
        Observer { client, rx, backlog: Default::default(), task }
    }

    /// The next message on `topic` within `timeout`.
    /// Messages on other topics are kept for later calls.
    pub async fn next_on(&mut self, topic: &str, timeout: Duration) -> Option<Msg> {
        if let Some(i) = self.backlog.iter().position(|m| m.topic == topic) {
            return self.backlog.remove(i);
        }
        let until = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(m)) if m.topic == topic => return Some(m),
                Ok(Some(m)) => self.backlog.push_back(m),
                _ => return None,
            }
        }
    }

    /// Waits for a message on `topic` whose text is `text`.
    pub async fn wait_text(&mut self, topic: &str, text: &str, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.next_on(topic, left).await {
                Some(m) if m.text() == text => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    }
}

/// Options of the node's client ([`sgbd_edge::mqtt::Link`]) for a broker on loopback.
pub fn link_options(port: u16, topics: Topics, id: &str) -> LinkOptions {
    LinkOptions {
        client_id: id.into(),
        host: "127.0.0.1".into(),
        port,
        keep_alive_s: 5,
        credentials: None,
        reconnect_max_s: 1,
        max_packet_bytes: 1 << 20,
        topics,
        outbox_window: 8,
        queue_capacity: 64,
        tls: None,
        session_expiry_s: None,
    }
}
