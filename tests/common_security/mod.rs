//! Shared helpers of the security tests: a test PKI made at test time (rcgen), and mosquitto run
//! from the production recipe in `systemd/mosquitto/` with test paths, ports and users.
#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA with its signing key.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf certificate for `names` (DNS names or IPs): (cert PEM, key PEM).
    pub fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Files of the test PKI in one directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub broker_cert: PathBuf,
    pub broker_key: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// A CA the broker does not trust, and a client cert signed by it.
    pub rogue_ca: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca = Ca::new("sgbd test CA");
        let rogue = Ca::new("rogue CA");
        let (bc, bk) = ca.leaf("broker", &["localhost", "127.0.0.1"]);
        let (nc, nk) = ca.leaf("edge-t", &["edge-t"]);
        let (rc, rk) = rogue.leaf("edge-t", &["edge-t"]);
        Pki {
            dir: dir.to_path_buf(),
            ca: write(dir, "ca.pem", &ca.pem),
            broker_cert: write(dir, "broker.pem", &bc),
            broker_key: write(dir, "broker.key", &bk),
            node_cert: write(dir, "node.pem", &nc),
            node_key: write(dir, "node.key", &nk),
            rogue_ca: write(dir, "rogue-ca.pem", &rogue.pem),
            rogue_cert: write(dir, "rogue.pem", &rc),
            rogue_key: write(dir, "rogue.key", &rk),
        }
    }

    pub fn tls(&self, ca: &Path, client: Option<(&Path, &Path)>) -> sgbd_edge::config::TlsConfig {
        sgbd_edge::config::TlsConfig {
            ca_file: Some(ca.to_path_buf()),
            client_cert: client.map(|c| c.0.to_path_buf()),
            client_key: client.map(|c| c.1.to_path_buf()),
        }
    }

    /// rustls client config trusting `ca`, with an optional client certificate.
    pub fn client(&self, ca: &Path, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
        sgbd_edge::mqtt::tls::client_config(&self.tls(ca, client)).unwrap()
    }
}

/// True when mosquitto and mosquitto_passwd are installed; prints a visible skip line otherwise.
pub fn have_mosquitto() -> bool {
    let ok = |c: &str| {
        Command::new(c)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if ok("mosquitto") && ok("mosquitto_passwd") {
        true
    } else {
        eprintln!("skipping: mosquitto / mosquitto_passwd not on PATH (apt-get install -y mosquitto)");
        false
    }
}

/// mosquitto run from `systemd/mosquitto/sgbd.conf` + `sgbd.acl`, on loopback, with test users.
pub struct SecureBroker {
    /// TLS + password listener (kiosks).
    pub port: u16,
    /// Mutual TLS + password listener (nodes).
    pub mtls_port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const RECIPE: &str = include_str!("../../systemd/mosquitto/sgbd.conf");
const ACL: &str = include_str!("../../systemd/mosquitto/sgbd.acl");

impl SecureBroker {
    /// `users`: (username, password). The recipe's node block is rewritten for store `s1`, node
    /// `edge-t` (the names tests/common_mqtt uses).
    pub fn start(pki: &Pki, users: &[(&str, &str)]) -> SecureBroker {
        let dir = &pki.dir;
        let passwd = dir.join("passwd");
        for (i, (u, p)) in users.iter().enumerate() {
            let mut c = Command::new("mosquitto_passwd");
            if i == 0 {
                c.arg("-c");
            }
            let st = c
                .arg("-b")
                .arg(&passwd)
                .arg(u)
                .arg(p)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "mosquitto_passwd failed");
        }
        let acl = write(
            dir,
            "sgbd.acl",
            &ACL.replace("sgbd/demo-store/edge-1/#", "sgbd/s1/edge-t/#")
                .replace("user edge-1", "user edge-t"),
        );
        let (port, mtls_port) = (free_port(), free_port());
        let mut conf = RECIPE
            .replace("/etc/mosquitto/sgbd.passwd", &passwd.display().to_string())
            .replace("/etc/mosquitto/sgbd.acl", &acl.display().to_string())
            .replace("/etc/mosquitto/certs/ca.pem", &pki.ca.display().to_string())
            .replace(
                "/etc/mosquitto/certs/broker.pem",
                &pki.broker_cert.display().to_string(),
            )
            .replace("/etc/mosquitto/certs/broker.key", &pki.broker_key.display().to_string())
            .replace("persistence true", "persistence false")
            .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
            .replace("listener 8884", &format!("listener {mtls_port} 127.0.0.1"));
        assert!(
            conf.contains(&format!("listener {mtls_port}")),
            "recipe changed: no listener 8884"
        );
        // As root mosquitto drops to user `mosquitto`, which cannot read the test's temp dir.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("\nuser root\n");
        }
        conf.push_str("log_dest stderr\nlog_type all\n");
        let conf_path = write(dir, "mosquitto.conf", &conf);
        let log = dir.join("mosquitto.log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let b = SecureBroker {
            port,
            mtls_port,
            child,
            log,
        };
        let until = Instant::now() + Duration::from_secs(10);
        while [port, mtls_port]
            .iter()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
        {
            assert!(Instant::now() < until, "mosquitto did not start: {}", b.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        b
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
