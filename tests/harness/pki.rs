//! A test PKI made at test time (rcgen): a CA, broker and node certificates, and a rogue CA with a
//! client certificate of its own.

use super::write;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(p, key) }
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
