//! TLS towards an external broker: rustls with the pure-Rust `ring` provider (no aws-lc, no
//! cmake, builds with the aarch64 cross gcc), the broker's CA from `mqtt.tls.ca_file`, and an
//! optional client certificate + key for mutual TLS. Files are read and checked when the daemon
//! starts, so a missing or malformed PEM is a clear start-up error, not a reconnect loop.

use super::MqttError;
use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, Once};

static PROVIDER: Once = Once::new();

/// Installs `ring` as the process-wide rustls crypto provider (once; later calls do nothing).
/// The configs built here name the provider explicitly, so this only matters for other users of
/// rustls in the process.
pub fn install_provider() {
    PROVIDER.call_once(|| {
        if rustls::crypto::ring::default_provider().install_default().is_err() {
            tracing::debug!("a rustls crypto provider was already installed");
        }
    });
}

fn tls_err(path: &Path, what: &str) -> MqttError {
    MqttError::Tls(format!("{}: {what}", path.display()))
}

/// Reads the certificates of a PEM file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MqttError> {
    let bytes = std::fs::read(path).map_err(|e| tls_err(path, &format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, &format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no CERTIFICATE block in this PEM file"));
    }
    Ok(certs)
}

/// Reads the private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, MqttError> {
    let bytes = std::fs::read(path).map_err(|e| tls_err(path, &format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| tls_err(path, &format!("no usable private key: {e}")))
}

/// The rustls client config for `tls`: the CA as the only trust anchor, and the client
/// certificate when one is configured.
pub fn client_config(tls: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    install_provider();
    let ca = tls.ca_file.as_deref().ok_or_else(|| MqttError::Tls("mqtt.tls.ca_file is required".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| tls_err(ca, &format!("not a usable CA certificate: {e}")))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError::Tls(format!("protocol versions: {e}")))?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert)?;
            let key_der = load_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls_err(key, &format!("does not match {}: {e}", cert.display())))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(MqttError::Tls("mqtt.tls.client_cert and client_key go together".into())),
    };
    Ok(Arc::new(config))
}

/// The rumqttc transport for a config: TLS when `mqtt.tls` is set, else plain TCP.
pub fn transport(tls: Option<&Arc<rustls::ClientConfig>>) -> rumqttc::Transport {
    match tls {
        Some(c) => rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(c.clone())),
        None => rumqttc::Transport::Tcp,
    }
}

/// The TLS config named by `mqtt.tls`, if any (checked now: unreadable or invalid files fail).
pub fn from_config(cfg: &crate::config::MqttConfig) -> Result<Option<Arc<rustls::ClientConfig>>, MqttError> {
    cfg.tls.as_ref().map(client_config).transpose()
}

/// A problem with a file `mqtt` names, for `sgbd-edge doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// False for a missing systemd credential (`/run/credentials/...`): only the service sees it.
    pub fatal: bool,
    pub message: String,
}

fn is_credential(p: &Path) -> bool {
    p.starts_with("/run/credentials")
        || std::env::var_os("CREDENTIALS_DIRECTORY").is_some_and(|d| p.starts_with(Path::new(&d)))
}

fn missing(key: &str, p: &Path) -> Option<FileProblem> {
    if p.exists() {
        return None;
    }
    Some(FileProblem {
        fatal: !is_credential(p),
        message: if is_credential(p) {
            format!("{key} {} is a systemd credential, not visible here (only to the service)", p.display())
        } else {
            format!("{key} {} does not exist", p.display())
        },
    })
}

/// Problems with the files `mqtt.tls` and `mqtt.password_file` name: each must exist and hold
/// valid PEM, and the client key must match its certificate. Empty when all is well.
pub fn check_files(cfg: &crate::config::MqttConfig) -> Vec<FileProblem> {
    let mut out = Vec::new();
    let fatal = |e: MqttError| FileProblem { fatal: true, message: e.to_string() };
    if let Some(p) = &cfg.password_file {
        out.extend(missing("mqtt.password_file", p));
    }
    let Some(tls) = &cfg.tls else { return out };
    let before = out.len();
    for (key, p) in [("mqtt.tls.ca_file", &tls.ca_file), ("mqtt.tls.client_cert", &tls.client_cert)] {
        if let Some(p) = p {
            match missing(key, p) {
                Some(m) => out.push(m),
                None => out.extend(load_certs(p).err().map(fatal)),
            }
        }
    }
    if let Some(p) = &tls.client_key {
        match missing("mqtt.tls.client_key", p) {
            Some(m) => out.push(m),
            None => out.extend(load_key(p).err().map(fatal)),
        }
    }
    if out.len() == before {
        out.extend(client_config(tls).err().map(fatal));
    }
    out
}
