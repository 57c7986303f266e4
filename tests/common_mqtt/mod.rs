//! Shared helpers of the MQTT / daemon integration tests: temporary configs, the daemon binary,
//! an observing MQTT 5 client, and a mosquitto broker when one is installed.
#![allow(dead_code)]

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use sgbd_edge::mqtt::kiosk::{KioskClient, Protocol};
use sgbd_edge::mqtt::Topics;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_sgbd-edge");

pub fn free_port_pair() -> u16 {
    sgbd_edge::mqtt::broker::free_port_pair().expect("free port pair")
}

/// Writes a config for a node on `port` with its data under `dir`.
pub fn write_config(dir: &Path, port: u16, external: bool, extra: &str) -> PathBuf {
    let p = dir.join("config.toml");
    let broker = if external { "external" } else { "embedded" };
    let text = format!(
        "[node]\nstore_id = \"s1\"\nnode_id = \"edge-t\"\ndata_dir = \"{}\"\n\n[log]\nfilter = \"info,rumqttd=off\"\n\n[mqtt]\nbroker = \"{broker}\"\nport = {port}\nstats_interval_s = 1\nreconnect_max_s = 1\n{extra}\n",
        dir.join("var").display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

pub fn topics() -> Topics {
    Topics::new("sgbd", "s1", "edge-t")
}

/// The daemon binary, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(config: &Path) -> Daemon {
        let log = config.with_extension("log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the exit status (None on timeout).
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects a kiosk and waits until the daemon answers a request (the daemon is up).
pub async fn kiosk_when_ready(port: u16, kiosk: &str, protocol: Protocol) -> KioskClient {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(k) = KioskClient::connect(
            "127.0.0.1",
            port,
            topics(),
            kiosk,
            protocol,
            None,
            Duration::from_secs(2),
        )
        .await
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
        tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .expect("observer subscribed")
            .unwrap();
        Observer {
            client,
            rx,
            backlog: Default::default(),
            task,
        }
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

/// A mosquitto broker on loopback, when `mosquitto` is on PATH.
pub struct Mosquitto {
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// `None` (with a visible message) when mosquitto is not installed.
    pub fn start(dir: &Path) -> Option<Mosquitto> {
        let found = Command::new("mosquitto")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("skipping: mosquitto not on PATH (apt-get install -y mosquitto)");
            return None;
        }
        let port = free_port_pair();
        let conf = dir.join("mosquitto.conf");
        let pdir = dir.join("mosq-data");
        std::fs::create_dir_all(&pdir).unwrap();
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nlog_dest stderr\nset_tcp_nodelay true\n# Run as root (CI), mosquitto would switch to its own user and fail to write its persistence here.\nuser root\n",
                pdir.display()
            ),
        )
        .unwrap();
        let mut m = Mosquitto {
            port,
            conf,
            child: None,
        };
        m.resume();
        Some(m)
    }

    /// Starts (again) on the same port and persistence directory; waits until it listens.
    pub fn resume(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Deletes its persistence (retained messages, sessions); call while stopped.
    pub fn wipe(&self) {
        if let Some(dir) = self.conf.parent() {
            let _ = std::fs::remove_dir_all(dir.join("mosq-data"));
            std::fs::create_dir_all(dir.join("mosq-data")).unwrap();
        }
    }

    /// Stops it with SIGTERM (it saves its persistence file) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
