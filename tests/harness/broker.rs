//! mosquitto, when it is installed, in the two forms the tests use: [`Mosquitto`], plain on
//! loopback with persistence (stopped and started again on the same port and data), and
//! [`SecureBroker`], the production TLS + ACL recipe of `systemd/mosquitto/` with test paths, ports
//! and users.

use super::daemon::free_port_pair;
use super::pki::Pki;
use super::write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when every one of `tools` is on PATH; prints a visible skip line otherwise.
fn installed(tools: &[&str]) -> bool {
    let ok = |c: &str| Command::new(c).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if tools.iter().all(|t| ok(t)) {
        true
    } else {
        eprintln!("skipping: {} not on PATH (apt-get install -y mosquitto)", tools.join(" / "));
        false
    }
}

/// True when mosquitto and mosquitto_passwd are installed (what [`SecureBroker`] needs); prints a
/// visible skip line otherwise.
pub fn have_mosquitto() -> bool {
    installed(&["mosquitto", "mosquitto_passwd"])
}

/// A mosquitto process run from `conf`, its stderr appended to `log`; killed when dropped.
struct Process {
    conf: PathBuf,
    log: PathBuf,
    /// Listeners on 127.0.0.1 that must accept connections before it counts as started.
    ports: Vec<u16>,
    child: Option<Child>,
}

impl Process {
    fn new(conf: PathBuf, ports: Vec<u16>) -> Process {
        let log = conf.with_extension("log");
        Process { conf, log, ports, child: None }
    }

    /// Starts it and waits until every listener accepts connections.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child =
            Command::new("mosquitto").arg("-c").arg(&self.conf).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while self.ports.iter().any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err()) {
            assert!(Instant::now() < until, "mosquitto did not start: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGTERM (it saves its persistence file) and waits.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain mosquitto broker on loopback (anonymous, persistence in `<dir>/mosq-data`), when
/// `mosquitto` is on PATH.
pub struct Mosquitto {
    pub port: u16,
    process: Process,
}

impl Mosquitto {
    /// Writes `<dir>/mosquitto.conf` and starts; `None` (with a visible message) when mosquitto is
    /// not installed.
    pub fn start(dir: &Path) -> Option<Mosquitto> {
        if !installed(&["mosquitto"]) {
            return None;
        }
        let port = free_port_pair();
        let pdir = dir.join("mosq-data");
        std::fs::create_dir_all(&pdir).unwrap();
        let conf = write(
            dir,
            "mosquitto.conf",
            &format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nlog_dest stderr\nset_tcp_nodelay true\n# Run as root (CI), mosquitto would switch to its own user and fail to write its persistence here.\nuser root\n",
                pdir.display()
            ),
        );
        let mut m = Mosquitto { port, process: Process::new(conf, vec![port]) };
        m.resume();
        Some(m)
    }

    /// Starts (again) on the same port and persistence directory; waits until it listens.
    pub fn resume(&mut self) {
        self.process.start();
    }

    /// Deletes its persistence (retained messages, sessions); call while stopped.
    pub fn wipe(&self) {
        if let Some(dir) = self.process.conf.parent() {
            let _ = std::fs::remove_dir_all(dir.join("mosq-data"));
            std::fs::create_dir_all(dir.join("mosq-data")).unwrap();
        }
    }

    /// Stops it with SIGTERM (it saves its persistence file) and waits.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

const RECIPE: &str = include_str!("../../systemd/mosquitto/sgbd.conf");
const ACL: &str = include_str!("../../systemd/mosquitto/sgbd.acl");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// mosquitto run from `systemd/mosquitto/sgbd.conf` + `sgbd.acl`, on loopback, with test users.
pub struct SecureBroker {
    /// TLS + password listener (kiosks).
    pub port: u16,
    /// Mutual TLS + password listener (nodes).
    pub mtls_port: u16,
    process: Process,
}

impl SecureBroker {
    /// `users`: (username, password). The recipe's node block is rewritten for store `s1`, node
    /// `edge-t` (the names of [`super::daemon::write_config`]).
    pub fn start(pki: &Pki, users: &[(&str, &str)]) -> SecureBroker {
        let dir = &pki.dir;
        let passwd = dir.join("passwd");
        for (i, (u, p)) in users.iter().enumerate() {
            let mut c = Command::new("mosquitto_passwd");
            if i == 0 {
                c.arg("-c");
            }
            let st = c.arg("-b").arg(&passwd).arg(u).arg(p).stdout(Stdio::null()).status().unwrap();
            assert!(st.success(), "mosquitto_passwd failed");
        }
        let acl = write(
            dir,
            "sgbd.acl",
            &ACL.replace("sgbd/demo-store/edge-1/#", "sgbd/s1/edge-t/#").replace("user edge-1", "user edge-t"),
        );
        let (port, mtls_port) = (free_port(), free_port());
        let mut conf = RECIPE
            .replace("/etc/mosquitto/sgbd.passwd", &passwd.display().to_string())
            .replace("/etc/mosquitto/sgbd.acl", &acl.display().to_string())
            .replace("/etc/mosquitto/certs/ca.pem", &pki.ca.display().to_string())
            .replace("/etc/mosquitto/certs/broker.pem", &pki.broker_cert.display().to_string())
            .replace("/etc/mosquitto/certs/broker.key", &pki.broker_key.display().to_string())
            .replace("persistence true", "persistence false")
            .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
            .replace("listener 8884", &format!("listener {mtls_port} 127.0.0.1"));
        assert!(conf.contains(&format!("listener {mtls_port}")), "recipe changed: no listener 8884");
        // As root mosquitto drops to user `mosquitto`, which cannot read the test's temp dir.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("\nuser root\n");
        }
        conf.push_str("log_dest stderr\nlog_type all\n");
        let mut process = Process::new(write(dir, "mosquitto.conf", &conf), vec![port, mtls_port]);
        process.start();
        SecureBroker { port, mtls_port, process }
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}
