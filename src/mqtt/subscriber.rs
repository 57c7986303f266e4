//! A subscriber's event loop, the same for both protocol versions.
//!
//! rumqttc has one set of types for MQTT 5 and another for 3.1.1. [`SubscriberLoop`] is what a
//! subscriber needs from either (connection events and received publishes, a way to subscribe);
//! [`spawn`] runs the loop every subscriber here shares: subscribe to one filter on each CONNACK,
//! report ready on the first SUBACK, hand each publish on, back off after a connection error.

use bytes::Bytes;
use std::future::Future;
use std::time::Duration;
use tokio::sync::oneshot;

/// A publish as a subscriber sees it (MQTT 5 properties are `None` on 3.1.1).
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
}

/// What one poll of the event loop gave.
#[derive(Debug)]
pub enum Polled {
    /// The broker acknowledged the connection (first connect or a reconnect).
    Connected,
    /// A subscription was acknowledged.
    Subscribed,
    Publish(Received),
    /// Anything else (pings, acknowledgements of our publishes, outgoing packets).
    Other,
}

/// One MQTT client and its event loop, whichever protocol version.
pub trait SubscriberLoop: Send + 'static {
    /// The next event; `Err` is a connection error (the event loop reconnects on the next poll).
    fn poll(&mut self) -> impl Future<Output = Result<Polled, String>> + Send;
    /// Asks for a QoS 1 subscription (acknowledged later by [`Polled::Subscribed`]).
    fn subscribe(&self, filter: &str);
}

/// rumqttc's MQTT 5 client and event loop.
pub struct V5Loop(pub rumqttc::v5::AsyncClient, pub rumqttc::v5::EventLoop);

impl SubscriberLoop for V5Loop {
    async fn poll(&mut self) -> Result<Polled, String> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::Event;
        Ok(match self.1.poll().await.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::ConnAck(_)) => Polled::Connected,
            Event::Incoming(Packet::SubAck(_)) => Polled::Subscribed,
            Event::Incoming(Packet::Publish(p)) => {
                let (response_topic, correlation) = match p.properties {
                    Some(pp) => (pp.response_topic, pp.correlation_data),
                    None => (None, None),
                };
                Polled::Publish(Received {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload,
                    response_topic,
                    correlation,
                })
            }
            _ => Polled::Other,
        })
    }

    fn subscribe(&self, filter: &str) {
        let _ = self.0.try_subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
    }
}

/// rumqttc's MQTT 3.1.1 client and event loop.
pub struct V4Loop(pub rumqttc::AsyncClient, pub rumqttc::EventLoop);

impl SubscriberLoop for V4Loop {
    async fn poll(&mut self) -> Result<Polled, String> {
        use rumqttc::{Event, Packet};
        Ok(match self.1.poll().await.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::ConnAck(_)) => Polled::Connected,
            Event::Incoming(Packet::SubAck(_)) => Polled::Subscribed,
            Event::Incoming(Packet::Publish(p)) => Polled::Publish(Received {
                topic: p.topic,
                payload: p.payload,
                response_topic: None,
                correlation: None,
            }),
            _ => Polled::Other,
        })
    }

    fn subscribe(&self, filter: &str) {
        let _ = self.0.try_subscribe(filter, rumqttc::QoS::AtLeastOnce);
    }
}

/// Runs `l` on a tokio task: subscribes to `filter` on every CONNACK, sends on `ready` at the
/// first SUBACK, calls `on_publish` for each publish, `on_link(true/false)` when the connection
/// comes up or fails, and waits `backoff` after a connection error.
pub fn spawn<L, P, U>(
    mut l: L,
    filter: String,
    ready: oneshot::Sender<()>,
    backoff: Duration,
    mut on_link: U,
    mut on_publish: P,
) -> tokio::task::JoinHandle<()>
where
    L: SubscriberLoop,
    P: FnMut(Received) + Send + 'static,
    U: FnMut(bool) + Send + 'static,
{
    let mut ready = Some(ready);
    tokio::spawn(async move {
        loop {
            match l.poll().await {
                Ok(Polled::Connected) => {
                    on_link(true);
                    l.subscribe(&filter);
                }
                Ok(Polled::Subscribed) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Polled::Publish(p)) => on_publish(p),
                Ok(Polled::Other) => {}
                Err(e) => {
                    on_link(false);
                    tracing::debug!(error = %e, "subscriber connection error");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    })
}
