//! The embedded broker: rumqttd 0.20's router and servers, started in code, bound to loopback only.
//!
//! Two listeners share one router: `mqtt.port` and `mqtt.port + 1`. Both speak MQTT 5 **and**
//! MQTT 3.1.1: each connection's protocol level is read from its CONNECT ([`AnyVersion`]), so a
//! kiosk on the "wrong" port is served instead of being dropped without a CONNACK. The ports stay
//! two so that kiosks configured for `port + 1` (3.1.1) keep working.
//!
//! rumqttd's own servers cannot carry MQTT 5 traffic to a 3.1.1 subscriber: its v4 encoder hits
//! `unreachable!` on a publish with properties (Response Topic, Correlation Data, Message Expiry),
//! the connection task dies without cleaning up, and the next connect with the same client id
//! poisons the listener's lock so that every later 3.1.1 connect is refused. [`AnyVersion`] drops
//! the properties on the way to a 3.1.1 client, and turns any panic inside rumqttd's packet codec
//! into an ordinary protocol error, so the connection closes through rumqttd's normal clean-up.
//!
//! What rumqttd 0.20 does besides (read from its source): retained messages, Last Will with QoS
//! and retain (fired on an unclean disconnect, dropped on a clean DISCONNECT), MQTT 5 publish
//! properties forwarded to MQTT 5 subscribers. It has **no topic ACLs** and no per-client
//! passwords here, which is why it only ever binds 127.0.0.1 / ::1. There is no API to stop it:
//! its threads end with the process.

use super::MqttError;
use bytes::BytesMut;
use rumqttd::protocol::{self as codec, v4::V4, v5::V5, Packet, Protocol};
use std::net::{IpAddr, SocketAddr, TcpListener};

/// Where the embedded broker listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedBroker {
    /// MQTT 5 listener.
    pub v5: SocketAddr,
    /// MQTT 3.1.1 listener (`v5` port + 1).
    pub v4: SocketAddr,
}

/// How long a new connection may take to send its CONNECT before the broker drops it. rumqttd
/// drops a first byte that cannot start a CONNECT at once (the codec, [`AnyVersion`]); this bounds
/// the rest: a client that sends nothing, half a CONNECT, or bytes that look like the start of
/// one (a port scanner, a wrong-protocol client). The broker binds loopback only, where a real
/// client's CONNECT follows its TCP handshake within milliseconds.
pub const CONNECT_TIMEOUT_MS: u16 = 3_000;

fn connection_settings(max_payload: usize) -> rumqttd::ConnectionSettings {
    rumqttd::ConnectionSettings {
        connection_timeout_ms: CONNECT_TIMEOUT_MS,
        max_payload_size: max_payload,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    }
}

/// Largest packet the embedded broker accepts. Deliberately above `mqtt.max_payload_bytes` so that
/// an oversized kiosk payload reaches the node and gets an error reply instead of a disconnect.
pub fn broker_max_payload(max_payload_bytes: usize) -> usize {
    (max_payload_bytes.saturating_mul(4)).clamp(1 << 20, 64 << 20)
}

/// Starts rumqttd on `host:port` (v5) and `host:port+1` (v4) on its own threads, after checking
/// that both ports are free. `host` must be a loopback address.
pub fn start_embedded(host: &str, port: u16, max_payload_bytes: usize) -> Result<EmbeddedBroker, MqttError> {
    let ip: IpAddr = host.parse().map_err(|_| MqttError::Broker(format!("{host:?} is not an IP address")))?;
    if !ip.is_loopback() {
        return Err(MqttError::Broker(format!("embedded broker binds loopback only, not {ip}")));
    }
    let v4_port = port.checked_add(1).ok_or_else(|| MqttError::Broker("port + 1 overflows".into()))?;
    let v5 = SocketAddr::new(ip, port);
    let v4 = SocketAddr::new(ip, v4_port);
    for addr in [v5, v4] {
        // rumqttd only logs a bind failure from its server thread; find it out here instead.
        TcpListener::bind(addr).map_err(|e| MqttError::Broker(format!("cannot listen on {addr}: {e}")))?;
    }
    let max_payload = broker_max_payload(max_payload_bytes);
    let server = |name: &str, listen| rumqttd::ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: connection_settings(max_payload),
    };
    let router = rumqttd::RouterConfig {
        max_connections: 10_000,
        max_outgoing_packet_count: 200,
        // rumqttd keeps each topic filter's recent messages in memory, up to this many
        // segments of this size; they are also a slow subscriber's buffer. 4 x 4 MiB per
        // filter let a 5-minute soak grow by 77 %; 3 x 1 MiB stays flat (docs/benchmarks.md).
        max_segment_size: max_payload.max(1 << 20),
        max_segment_count: 3,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let router_tx = rumqttd::Router::new(0, router).spawn();
    for (name, addr) in [("sgbd-v5", v5), ("sgbd-v4", v4)] {
        let mut srv = rumqttd::Server::new(server(name, addr), router_tx.clone(), AnyVersion::default());
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        return tracing::error!(error = %e, listener = %addr, "embedded broker listener not started")
                    }
                };
                if let Err(e) = rt.block_on(srv.start(rumqttd::LinkType::Remote)) {
                    tracing::error!(error = ?e, listener = %addr, "embedded broker listener stopped");
                }
            })
            .map_err(|e| MqttError::Broker(format!("cannot start broker thread: {e}")))?;
    }
    std::thread::Builder::new()
        .name("broker-nodelay".into())
        .spawn(nodelay_sweeper)
        .map_err(|e| MqttError::Broker(format!("cannot start nodelay thread: {e}")))?;
    // No readiness probe here: a bare TCP probe makes rumqttd log an error. The node's client
    // retries with backoff, and the daemon gives up if it cannot connect in time.
    tracing::info!(v5 = %v5, v4 = %v4, "embedded broker listening (loopback only, no ACLs; MQTT 5 and 3.1.1 on both)");
    Ok(EmbeddedBroker { v5, v4 })
}

/// rumqttd's packet codec for one connection, MQTT 5 or 3.1.1 as its CONNECT says.
///
/// rumqttd clones the server's codec for every accepted connection and keeps the clone for the
/// connection's life, so `v5` is per connection: `None` until the CONNECT has been read.
#[derive(Debug, Clone, Default)]
pub struct AnyVersion {
    v5: Option<bool>,
}

/// The protocol level of the CONNECT at the start of `stream`; `InsufficientBytes` (at least how
/// many more) while it is incomplete, another error for what is not an MQTT CONNECT.
fn connect_level(stream: &[u8]) -> Result<u8, codec::Error> {
    let need = |n: usize| codec::Error::InsufficientBytes(n.saturating_sub(stream.len()).max(1));
    let first = *stream.first().ok_or_else(|| need(1))?;
    if first >> 4 != 1 {
        return Err(codec::Error::InvalidPacketType(first >> 4));
    }
    // Remaining length: 1 to 4 bytes, 7 bits each, high bit = more.
    let mut i = 1;
    loop {
        let b = *stream.get(i).ok_or_else(|| need(i + 1))?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(codec::Error::MalformedRemainingLength);
        }
    }
    // Protocol name (2-byte length + "MQTT" / "MQIsdp"), then the level byte.
    let (hi, lo) = (*stream.get(i).ok_or_else(|| need(i + 2))?, *stream.get(i + 1).ok_or_else(|| need(i + 2))?);
    let name_len = usize::from(u16::from_be_bytes([hi, lo]));
    let at = i + 2 + name_len;
    stream.get(at).copied().ok_or_else(|| need(at + 1))
}

/// Runs one codec call; a panic inside rumqttd's codec (`unreachable!` on packets it does not
/// expect) becomes a protocol error, so the connection ends through rumqttd's normal clean-up
/// instead of killing its task with a lock held.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, codec::Error>) -> Result<T, codec::Error> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(what, "embedded broker: packet codec panicked; connection closed");
            Err(codec::Error::InvalidProtocol)
        }
    }
}

/// The packet without its MQTT 5 properties, for a 3.1.1 client.
fn without_properties(p: Packet) -> Packet {
    match p {
        Packet::Connect(c, _, will, _, login) => Packet::Connect(c, None, will, None, login),
        Packet::ConnAck(a, _) => Packet::ConnAck(a, None),
        Packet::Publish(p, _) => Packet::Publish(p, None),
        Packet::PubAck(a, _) => Packet::PubAck(a, None),
        Packet::Subscribe(s, _) => Packet::Subscribe(s, None),
        Packet::SubAck(a, _) => Packet::SubAck(a, None),
        Packet::PubRec(a, _) => Packet::PubRec(a, None),
        Packet::PubRel(a, _) => Packet::PubRel(a, None),
        Packet::PubComp(a, _) => Packet::PubComp(a, None),
        Packet::Unsubscribe(u, _) => Packet::Unsubscribe(u, None),
        Packet::UnsubAck(a, _) => Packet::UnsubAck(a, None),
        Packet::Disconnect(d, _) => Packet::Disconnect(d, None),
        other @ (Packet::PingReq(_) | Packet::PingResp(_)) => other,
    }
}

impl Protocol for AnyVersion {
    fn read_mut(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, codec::Error> {
        let v5 = match self.v5 {
            Some(v5) => v5,
            None => match connect_level(stream)? {
                5 => true,
                4 => false,
                level => return Err(codec::Error::InvalidProtocolLevel(level)),
            },
        };
        let packet = if v5 {
            guarded("read v5", || V5.read_mut(stream, max_size))?
        } else {
            guarded("read 3.1.1", || V4.read_mut(stream, max_size))?
        };
        if matches!(packet, Packet::Connect(..)) {
            self.v5 = Some(v5);
        }
        Ok(packet)
    }

    fn write(&self, packet: Packet, buffer: &mut BytesMut) -> Result<usize, codec::Error> {
        let start = buffer.len();
        let r = match self.v5 {
            Some(false) => guarded("write 3.1.1", || V4.write(without_properties(packet), buffer)),
            _ => guarded("write v5", || V5.write(packet, buffer)),
        };
        if r.is_err() {
            buffer.truncate(start);
        }
        r
    }
}

/// A free TCP port pair (`p`, `p + 1`) on 127.0.0.1, for tests and benchmarks.
pub fn free_port_pair() -> Option<u16> {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.1:0").ok()?;
        let p = l.local_addr().ok()?.port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Some(p);
        }
    }
    None
}

/// rumqttd 0.20 leaves Nagle's algorithm on for its sockets. For request/reply traffic that costs
/// a delayed-ACK wait (about 40 ms on Linux) per forwarded reply. The broker runs in this process,
/// so its sockets are ours: set `TCP_NODELAY` on every socket of the process (its listeners pass it
/// on to accepted connections on Linux; later sweeps catch anything accepted before). Non-TCP
/// sockets refuse the option, which is ignored. Sweeps often at first, then every few seconds.
fn nodelay_sweeper() {
    let mut done = std::collections::HashSet::new();
    let mut n = 0u64;
    loop {
        sweep_nodelay(&mut done);
        n += 1;
        let pause = if n < 50 { 100 } else { 2000 };
        std::thread::sleep(std::time::Duration::from_millis(pause));
    }
}

fn sweep_nodelay(done: &mut std::collections::HashSet<(i32, String)>) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if !target.starts_with("socket:") || !done.insert((fd, target)) {
            continue;
        }
        let _ = crate::sys::set_tcp_nodelay_raw(fd);
    }
    if done.len() > 100_000 {
        done.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    /// An embedded broker whose two listeners both complete an MQTT session.
    fn start() -> u16 {
        let port = free_port_pair().unwrap();
        start_embedded("127.0.0.1", port, 1 << 20).unwrap();
        for p in [port, port + 1] {
            let probe = crate::mqtt::probe::Probe {
                host: "127.0.0.1".into(),
                port: p,
                protocol: crate::mqtt::kiosk::Protocol::V5,
                client_id: format!("ready-{p}"),
                credentials: None,
                tls: None,
                timeout: Duration::from_secs(1),
            };
            let until = Instant::now() + Duration::from_secs(10);
            while crate::mqtt::probe::handshake(&probe).is_err() {
                assert!(Instant::now() < until, "embedded broker did not start on {p}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        port
    }

    /// A 3.1.1 client: connects, subscribes to `filter`, returns the first publish it gets.
    async fn v4_receive(port: u16, id: &str, filter: &str, wait: Duration) -> Result<Vec<u8>, String> {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (c, mut el) = AsyncClient::new(o, 10);
        let r = tokio::time::timeout(wait, async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(filter, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => return Ok(p.payload.to_vec()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "timed out".to_string())?;
        drop(el); // no DISCONNECT: like a client that goes away
        r
    }

    async fn v5_publish(port: u16, topic: &str, retain: bool) {
        use rumqttc::v5::mqttbytes::v5::PublishProperties;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let (c, mut el) = AsyncClient::new(MqttOptions::new("pub5", "127.0.0.1", port), 10);
        let props = PublishProperties {
            response_topic: Some("sgbd/s/n/kiosk/k1/reply".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"c-1")),
            message_expiry_interval: Some(60),
            ..Default::default()
        };
        c.publish_with_properties(topic, QoS::AtLeastOnce, retain, "hello", props).await.unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_))) = el.poll().await {
                return;
            }
        }
        panic!("no PUBACK");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_3_1_1_subscriber_gets_mqtt5_messages_and_the_listener_survives_reconnects() {
        let port = tokio::task::spawn_blocking(start).await.unwrap();
        // Retained with properties: rumqttd 0.20's own v4 listener panicked on it and, after a
        // same-id reconnect, refused every 3.1.1 connect.
        v5_publish(port, "sgbd/t/retained", true).await;
        for round in 0..3 {
            let got = v4_receive(port + 1, "techmon", "sgbd/#", Duration::from_secs(5)).await;
            assert_eq!(got.as_deref(), Ok(&b"hello"[..]), "round {round}");
        }
        // A live (not retained) message with properties, to a fresh 3.1.1 id.
        let rx = tokio::spawn(v4_receive(port + 1, "techmon-2", "sgbd/t/live", Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        v5_publish(port, "sgbd/t/live", false).await;
        assert_eq!(rx.await.unwrap().as_deref(), Ok(&b"hello"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_listeners_speak_both_versions() {
        let port = tokio::task::spawn_blocking(start).await.unwrap();
        v5_publish(port + 1, "sgbd/t/x", true).await;
        assert_eq!(
            v4_receive(port, "v4-on-v5-port", "sgbd/t/x", Duration::from_secs(5)).await.as_deref(),
            Ok(&b"hello"[..])
        );
        assert_eq!(
            v4_receive(port + 1, "v4-on-v4-port", "sgbd/t/x", Duration::from_secs(5)).await.as_deref(),
            Ok(&b"hello"[..])
        );
    }

    /// Raw CONNECT bytes (clean session, keep-alive 30 s) for `level` 4 or 5.
    fn connect_packet(level: u8, id: &str) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 30];
        if level == 5 {
            body.push(0); // no properties
        }
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id.as_bytes());
        let mut p = vec![0x10, body.len() as u8];
        p.extend(body);
        p
    }

    fn connack(port: u16, level: u8, id: &str) -> std::io::Result<[u8; 4]> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(&connect_packet(level, id))?;
        let mut a = [0u8; 4];
        s.read_exact(&mut a)?;
        Ok(a)
    }

    #[test]
    fn codec_panics_close_only_the_connection_and_wrong_protocols_are_dropped_at_once() {
        let port = start();
        // A client that sends a CONNACK (a packet only brokers send) after connecting: rumqttd's
        // v5 decoder reaches `unreachable!`. The same id then connects again, and others too.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(&connect_packet(5, "odd")).unwrap();
        let mut a = [0u8; 5];
        s.read_exact(&mut a).unwrap();
        assert_eq!(a[0], 0x20);
        s.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // closed by the broker
        for (p, level) in [(port, 5), (port, 4), (port + 1, 4), (port + 1, 5)] {
            let a = connack(p, level, "odd").unwrap();
            assert_eq!(a[0], 0x20, "CONNACK on {p} for level {level}");
        }
        // Not MQTT at all: closed at once, not after the connection timeout.
        let t = Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port + 1)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(buf.is_empty() && t.elapsed() < Duration::from_secs(2), "{:?} {:?}", buf, t.elapsed());
    }

    #[test]
    fn connect_level_reads_the_protocol_level_or_asks_for_more() {
        let p = connect_packet(4, "k");
        assert_eq!(connect_level(&p).unwrap(), 4);
        assert_eq!(connect_level(&connect_packet(5, "k")).unwrap(), 5);
        for cut in 0..7 {
            assert!(matches!(connect_level(&p[..cut]), Err(codec::Error::InsufficientBytes(n)) if n >= 1), "{cut}");
        }
        assert!(matches!(connect_level(b"GET /"), Err(codec::Error::InvalidPacketType(4))));
        assert!(connect_level(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }
}
