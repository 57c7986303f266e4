//! Clients that do not speak MQTT on the embedded broker's ports (an HTTP GET, a TLS ClientHello,
//! random bytes, half a CONNECT, nothing at all) are disconnected promptly: at once when the
//! first bytes cannot start a CONNECT, within [`CONNECT_TIMEOUT_MS`] when they could or when
//! nothing comes. The broker keeps serving MQTT clients meanwhile.

use crate::harness::daemon::free_port_pair;
use rand::{Rng, SeedableRng};
use sgbd_edge::mqtt::broker::CONNECT_TIMEOUT_MS;
use sgbd_edge::mqtt::kiosk::Protocol;
use sgbd_edge::mqtt::probe::{handshake, Probe};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn probe(port: u16, id: &str) -> Probe {
    Probe {
        host: "127.0.0.1".into(),
        port,
        protocol: Protocol::V5,
        client_id: id.into(),
        credentials: None,
        tls: None,
        timeout: Duration::from_secs(2),
    }
}

/// Sends `bytes`, then reads until the broker closes the connection; returns how long that took
/// and what it sent back (`None`: still open after `limit`).
fn closed_after(port: u16, bytes: &[u8], limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    if !bytes.is_empty() {
        // The broker may close before all of it is written: that is a prompt disconnect too.
        let _ = s.write_all(bytes);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some((t.elapsed(), got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            Err(_) => return Some((t.elapsed(), got)), // reset
        }
    }
}

#[test]
fn non_mqtt_clients_are_disconnected_promptly() {
    let _turn = crate::harness::shared();
    let port = free_port_pair();
    sgbd_edge::mqtt::broker::start_embedded("127.0.0.1", port, 1 << 20).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while handshake(&probe(port, "ready")).is_err() {
        assert!(Instant::now() < until, "embedded broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let timeout = Duration::from_millis(u64::from(CONNECT_TIMEOUT_MS));
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("HTTP GET".into(), b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n".to_vec()),
        // 0x16 has a CONNECT's packet type (1) in its high nibble: dropped by the timeout.
        ("TLS ClientHello".into(), vec![0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03]),
        ("SSH banner".into(), b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        ("half a CONNECT".into(), vec![0x10, 0x20, 0x00, 0x04, b'M']),
        ("a CONNECT announcing 256 MiB".into(), vec![0x10, 0xff, 0xff, 0xff, 0x7f]),
        ("nothing".into(), vec![]),
    ];
    for seed in 0..6u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = rng.random_range(1..512);
        cases.push((format!("{n} random bytes (seed {seed})"), (0..n).map(|_| rng.random()).collect()));
    }
    // (what, bytes, closed at once): at once when the first byte cannot start a CONNECT.
    let cases: Vec<(String, Vec<u8>, bool)> = cases
        .into_iter()
        .map(|(what, bytes)| {
            let at_once = bytes.first().is_some_and(|b| b >> 4 != 1);
            (what, bytes, at_once)
        })
        .collect();
    // All at once, on both listeners: the silent ones each take the connect timeout.
    let handles: Vec<_> = cases
        .into_iter()
        .flat_map(|(what, bytes, at_once)| {
            [port, port + 1].map(|p| {
                let (what, bytes) = (what.clone(), bytes.clone());
                std::thread::spawn(move || (what, p, at_once, closed_after(p, &bytes, Duration::from_secs(15))))
            })
        })
        .collect();
    for h in handles {
        let (what, p, at_once, r) = h.join().unwrap();
        let (took, got) = r.unwrap_or_else(|| panic!("{what} on port {p}: still connected after 15 s"));
        let bound = if at_once { Duration::from_secs(1) } else { timeout + Duration::from_secs(2) };
        assert!(took < bound, "{what} on port {p}: closed after {took:?}, expected under {bound:?}");
        assert!(got.first() != Some(&0x20), "{what} on port {p}: got a CONNACK {got:?}");
    }
    // The broker still serves MQTT on both ports.
    for p in [port, port + 1] {
        handshake(&probe(p, &format!("after-{p}"))).unwrap();
    }
}
