//! The embedded broker: rumqttd 0.20, configured in code, bound to loopback only.
//!
//! Two listeners share one router: MQTT 5 on `mqtt.port` and MQTT 3.1.1 on `mqtt.port + 1`.
//! What rumqttd 0.20 does (read from its source, checked by `tests/mqtt_broker.rs`): retained
//! messages (v4 and v5), Last Will with QoS and retain (fired at once on an unclean disconnect,
//! dropped on a clean DISCONNECT), and v5 publish properties (Response Topic, Correlation Data,
//! Message Expiry, user properties) forwarded to v5 subscribers. It has **no topic ACLs** and no
//! per-client passwords here, which is why it only ever binds 127.0.0.1 / ::1. There is no API to
//! stop it: its threads end with the process.

use super::MqttError;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};

/// Where the embedded broker listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedBroker {
    /// MQTT 5 listener.
    pub v5: SocketAddr,
    /// MQTT 3.1.1 listener (`v5` port + 1).
    pub v4: SocketAddr,
}

fn connection_settings(max_payload: usize) -> rumqttd::ConnectionSettings {
    rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
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
    let ip: IpAddr = host
        .parse()
        .map_err(|_| MqttError::Broker(format!("{host:?} is not an IP address")))?;
    if !ip.is_loopback() {
        return Err(MqttError::Broker(format!(
            "embedded broker binds loopback only, not {ip}"
        )));
    }
    let v4_port = port
        .checked_add(1)
        .ok_or_else(|| MqttError::Broker("port + 1 overflows".into()))?;
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
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
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
        },
        v4: Some(HashMap::from([("v4".to_string(), server("sgbd-v4", v4))])),
        v5: Some(HashMap::from([("v5".to_string(), server("sgbd-v5", v5))])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| MqttError::Broker(format!("cannot start broker thread: {e}")))?;
    std::thread::Builder::new()
        .name("broker-nodelay".into())
        .spawn(nodelay_sweeper)
        .map_err(|e| MqttError::Broker(format!("cannot start nodelay thread: {e}")))?;
    // No readiness probe here: a bare TCP probe makes rumqttd log an error. The node's client
    // retries with backoff, and the daemon gives up if it cannot connect in time.
    tracing::info!(v5 = %v5, v4 = %v4, "embedded broker listening (loopback only, no ACLs)");
    Ok(EmbeddedBroker { v5, v4 })
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
