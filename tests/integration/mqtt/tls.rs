//! TLS files: bad PEM files give clear errors naming the file, and doctor's file check. (The
//! broker with TLS, credentials and ACLs: `system::security::tls`.)

use crate::harness::pki::Pki;
use crate::harness::write;

#[test]
fn bad_pem_files_give_clear_errors() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let garbage =
        write(dir.path(), "garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n");
    let empty = write(dir.path(), "empty.pem", "hello\n");
    let missing = dir.path().join("missing.pem");
    let err = |t: sgbd_edge::config::TlsConfig| sgbd_edge::mqtt::tls::client_config(&t).unwrap_err().to_string();

    let e = err(pki.tls(&missing, None));
    assert!(e.contains("missing.pem") && e.contains("cannot read"), "{e}");
    let e = err(pki.tls(&garbage, None));
    assert!(e.contains("garbage.pem") && e.contains("invalid PEM"), "{e}");
    let e = err(pki.tls(&empty, None));
    assert!(e.contains("empty.pem") && e.contains("no CERTIFICATE"), "{e}");
    // A certificate where the key should be, and a key that does not match the certificate.
    let e = err(pki.tls(&pki.ca, Some((&pki.node_cert, &pki.node_cert))));
    assert!(e.contains("node.pem") && e.contains("private key"), "{e}");
    let e = err(pki.tls(&pki.ca, Some((&pki.node_cert, &pki.rogue_key))));
    assert!(e.contains("rogue.key") && e.contains("does not match"), "{e}");
    // The good ones load.
    sgbd_edge::mqtt::tls::client_config(&pki.tls(&pki.ca, Some((&pki.node_cert, &pki.node_key)))).unwrap();

    // doctor's file check: a missing systemd credential is a warning, a missing CA a failure.
    let mut m = sgbd_edge::config::MqttConfig {
        broker: sgbd_edge::config::BrokerMode::External,
        tls: Some(
            pki.tls(&missing, Some((&pki.node_cert, std::path::Path::new("/run/credentials/sgbd-edge.service/k")))),
        ),
        ..Default::default()
    };
    let probs = sgbd_edge::mqtt::tls::check_files(&m);
    assert!(probs.iter().any(|p| p.fatal && p.message.contains("missing.pem")), "{probs:?}");
    assert!(probs.iter().any(|p| !p.fatal && p.message.contains("systemd credential")), "{probs:?}");
    m.tls = Some(pki.tls(&pki.ca, Some((&pki.node_cert, &pki.node_key))));
    assert!(sgbd_edge::mqtt::tls::check_files(&m).is_empty());
}
