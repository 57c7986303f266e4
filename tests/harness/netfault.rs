//! Network faults: a kiosk that stops reading its socket (raw MQTT 3.1.1 over TCP), latency
//! percentiles, the daemon's status.json counters, its resident memory and the events it stored.
//! (`qos1_rtt.py` beside this file measures request round trips by hand: docs/security.md.)

use bytes::BytesMut;
use rumqttc::{Connect, Publish, QoS, Subscribe};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A misbehaving kiosk: it connects (MQTT 3.1.1), subscribes to its reply topic, and from then on
/// never reads its socket again (so it never acknowledges a QoS 1 delivery either), while a thread
/// floods recommendation requests and acknowledged events whose replies all go to that unread
/// reply topic.
pub struct SlowKiosk {
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    /// Messages written so far.
    pub sent: Arc<AtomicU64>,
    flood: Option<std::thread::JoinHandle<()>>,
}

fn packet(write: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    write(&mut b);
    b.to_vec()
}

impl SlowKiosk {
    /// Connects to the 3.1.1 listener at `port` as kiosk `kiosk` and subscribes to `reply_topic`
    /// at `qos`: at QoS 1 the broker stops at its in-flight window (no PUBACK ever comes) and
    /// queues the rest; at QoS 0 it writes until the TCP buffers are full.
    pub fn connect(port: u16, kiosk: &str, reply_topic: &str, qos: QoS) -> SlowKiosk {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut c = Connect::new(format!("slow-{kiosk}-{}", std::process::id()));
        // No keep-alive pings will be sent; a long keep-alive keeps the broker from dropping it.
        c.keep_alive = 600;
        s.write_all(&packet(|b| {
            c.write(b).unwrap();
        }))
        .unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK refused");
        let mut sub = Subscribe::new(reply_topic, qos);
        sub.pkid = 1;
        s.write_all(&packet(|b| {
            sub.write(b).unwrap();
        }))
        .unwrap();
        let mut suback = [0u8; 5];
        s.read_exact(&mut suback).unwrap();
        assert_eq!(&suback[..4], &[0x90, 0x03, 0x00, 0x01], "SUBACK");
        assert_eq!(suback[4], qos as u8, "subscription refused");
        SlowKiosk { stream: s, stop: Arc::new(AtomicBool::new(false)), sent: Arc::new(AtomicU64::new(0)), flood: None }
    }

    /// Starts flooding (QoS 0 publishes, `per_10ms` requests and as many acknowledged events
    /// every 10 ms) on `recommend_topic` / `events_topic`, replies to `reply_topic`. The socket is
    /// never read from here on. A write that blocks (the broker stopped reading) just waits.
    pub fn flood(&mut self, recommend_topic: &str, events_topic: &str, reply_topic: &str, per_10ms: usize) {
        let mut s = self.stream.try_clone().unwrap();
        s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let (stop, sent) = (self.stop.clone(), self.sent.clone());
        let (rt, et, reply) = (recommend_topic.to_string(), events_topic.to_string(), reply_topic.to_string());
        self.flood = Some(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let mut buf = BytesMut::new();
                for _ in 0..per_10ms {
                    n += 1;
                    let req = serde_json::json!({"schema_version":"1.0","ts":sgbd_edge::sys::now_ms(),"user":format!("flood{}", n % 97),
                        "k":10,"reply_to":reply,"request_id":format!("slow-r{n}")});
                    Publish::new(&rt, QoS::AtMostOnce, req.to_string()).write(&mut buf).unwrap();
                    let ev = serde_json::json!({"schema_version":"1.0","ts":sgbd_edge::sys::now_ms(),"event_id":format!("slow-e{n}"),
                        "user":format!("flood{}", n % 97),"sku":format!("F{}", n % 31),"kind":"view",
                        "reply_to":reply,"request_id":format!("slow-e{n}")});
                    Publish::new(&et, QoS::AtMostOnce, ev.to_string()).write(&mut buf).unwrap();
                }
                let mut off = 0;
                while off < buf.len() && !stop.load(Ordering::Relaxed) {
                    match s.write(&buf[off..]) {
                        Ok(0) => return,
                        Ok(w) => off += w,
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        }
                        Err(_) => return,
                    }
                }
                sent.fetch_add(2 * per_10ms as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10).saturating_sub(t0.elapsed()));
            }
        }));
    }

    /// Bytes the broker delivered that this kiosk has not read (the kernel's receive queue).
    pub fn unread_bytes(&self) -> usize {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on our own socket with a properly sized int out-parameter.
        let r = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::FIONREAD, &mut n) };
        if r == 0 {
            n.max(0) as usize
        } else {
            0
        }
    }

    /// Stops the flood (the connection stays open, still unread).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.flood.take() {
            let _ = h.join();
        }
    }
}

impl Drop for SlowKiosk {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Latencies in milliseconds, with percentiles.
#[derive(Debug, Default, Clone)]
pub struct Lat(pub Vec<f64>);

impl Lat {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e3);
    }
    pub fn extend(&mut self, o: &Lat) {
        self.0.extend_from_slice(&o.0);
    }
    /// The `p`-th percentile (nearest rank), 0 when empty.
    pub fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[i.clamp(1, v.len()) - 1]
    }
    pub fn summary(&self) -> String {
        format!(
            "n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
            self.0.len(),
            self.pct(50.0),
            self.pct(99.0),
            self.pct(100.0)
        )
    }
}

/// The daemon's counters from `<data_dir>/status.json` (rewritten every 2 s).
pub fn status_counters(data_dir: &Path) -> serde_json::Value {
    std::fs::read(data_dir.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|v| v["counters"].clone())
        .unwrap_or(serde_json::Value::Null)
}

pub fn counter(c: &serde_json::Value, name: &str) -> u64 {
    c[name].as_u64().unwrap_or(0)
}

/// Resident memory of process `pid` in KiB (`VmRSS` in /proc/<pid>/status).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// How many times each event id is stored in the daemon's database.
pub fn stored_counts(db: &Path) -> std::collections::HashMap<String, usize> {
    let s = sgbd_edge::store::Store::open(db, 5000).unwrap();
    let mut m = std::collections::HashMap::new();
    // Durable either way: as interactions, or held apart when the SKU is not in the catalogue.
    for e in s.interactions().unwrap().into_iter().chain(s.held_interactions().unwrap()) {
        *m.entry(e.event_id).or_default() += 1;
    }
    m
}
