//! `doctor` checks and the `status` report on temporary appliances.

use sgbd_edge::config::{BrokerMode, CameraConfig, CameraKind, Config};
use sgbd_edge::doctor::{self, Check, CheckStatus};
use sgbd_edge::store::{self, ModelStatus, NewModelVersion};
use std::path::Path;

fn config_in(dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.node.data_dir = dir.join("var");
    cfg.denoise.models_dir = dir.join("models");
    cfg
}

fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name} in {checks:#?}"))
}

#[test]
fn good_setup_passes_config_disk_and_database() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_in(dir.path());
    let s = store::open_config(&cfg).unwrap();
    s.upsert_item(&store::NewItem {
        sku: "A".into(),
        title: "a".into(),
        description: String::new(),
        attributes: serde_json::Value::Null,
        image_path: None,
    })
    .unwrap();
    drop(s);
    let checks = doctor::run_checks(&cfg);
    for name in ["config", "data_dir", "disk", "database", "cameras", "gpu"] {
        assert_eq!(find(&checks, name).status, CheckStatus::Ok, "{:?}", find(&checks, name));
    }
    assert!(
        find(&checks, "database")
            .detail
            .contains(&format!("schema {}, integrity ok, 1 items", sgbd_edge::store::migrations::LATEST)),
        "{:?}",
        find(&checks, "database")
    );
    assert_eq!(find(&checks, "recommender").status, CheckStatus::Warn, "no active model");
    assert_ne!(find(&checks, "broker").status, CheckStatus::Fail, "embedded broker down is not a failure");
    // Model files are absent in the temp models_dir: named, and failing.
    let models: Vec<_> = checks.iter().filter(|c| c.name.starts_with("model ")).collect();
    assert!(!models.is_empty());
    assert!(models.iter().all(|c| c.status == CheckStatus::Fail && c.detail.contains("missing")));
    assert!(doctor::any_failed(&checks));
    // Every check prints as one line: status, name, detail.
    for c in &checks {
        let line = c.to_string();
        assert!(!line.contains('\n') && line.starts_with(&c.status.to_string()), "{line}");
    }
}

#[test]
fn missing_data_dir_and_database_are_warnings_not_created() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_in(dir.path());
    let checks = doctor::run_checks(&cfg);
    assert_eq!(find(&checks, "data_dir").status, CheckStatus::Warn);
    assert_eq!(find(&checks, "database").status, CheckStatus::Warn);
    assert_eq!(find(&checks, "disk").status, CheckStatus::Ok, "measured on the nearest existing parent");
    assert!(!cfg.node.data_dir.exists(), "doctor creates nothing");
}

#[test]
fn corrupt_database_fails_naming_the_file_and_stays_untouched() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_in(dir.path());
    std::fs::create_dir_all(&cfg.node.data_dir).unwrap();
    let db = store::db_path(&cfg);
    std::fs::write(&db, "definitely not sqlite\n".repeat(100)).unwrap();
    let before = std::fs::read(&db).unwrap();
    let checks = doctor::run_checks(&cfg);
    let c = find(&checks, "database");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.detail.contains(&db.display().to_string()), "{}", c.detail);
    assert!(doctor::any_failed(&checks));
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let report = doctor::status_report(&cfg);
    assert!(report.counts.is_none());
    assert!(report.db_error.unwrap().contains("not a usable SQLite database"));
}

#[test]
fn active_model_checksum_cameras_and_external_broker() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_in(dir.path());
    let s = store::open_config(&cfg).unwrap();
    std::fs::create_dir_all(cfg.node.data_dir.join("registry")).unwrap();
    std::fs::write(cfg.node.data_dir.join("registry/v1.bin"), b"weights").unwrap();
    let good = sgbd_edge::sys::sha256_file(&cfg.node.data_dir.join("registry/v1.bin")).unwrap();
    let mv = |v: &str, sha: &str| NewModelVersion {
        version: v.into(),
        path: "registry/v1.bin".into(),
        sha256: sha.into(),
        metrics: serde_json::json!({"recall@20": 0.05}),
        parent: None,
        status: ModelStatus::Active,
    };
    s.insert_model_version(&mv("v1", &good)).unwrap();
    assert_eq!(find(&doctor::run_checks(&cfg), "recommender").status, CheckStatus::Ok);
    s.insert_model_version(&mv("v2", &"0".repeat(64))).unwrap();
    let c = doctor::run_checks(&cfg);
    assert_eq!(find(&c, "recommender").status, CheckStatus::Fail, "{:?}", find(&c, "recommender"));

    std::fs::create_dir_all(dir.path().join("incoming")).unwrap();
    cfg.capture.cameras = vec![
        CameraConfig {
            id: "a".into(),
            source: toml::from_str(&format!(
                "kind = \"folder\"\ndir = {:?}",
                dir.path().join("incoming").display().to_string()
            ))
            .unwrap(),
            slots: vec![],
        },
        CameraConfig {
            id: "b".into(),
            source: toml::from_str("kind = \"folder\"\ndir = \"/no/such/dir\"").unwrap(),
            slots: vec![],
        },
        CameraConfig {
            id: "c".into(),
            source: toml::from_str("kind = \"serial\"\nport = \"/dev/no-such-tty\"\nbaud = 38400").unwrap(),
            slots: vec![],
        },
    ];
    assert!(matches!(cfg.capture.cameras[2].source, CameraKind::Serial { .. }));
    // An external broker is checked with a real MQTT session (here an in-process rumqttd).
    let port = sgbd_edge::mqtt::broker::free_port_pair().unwrap();
    sgbd_edge::mqtt::broker::start_embedded("127.0.0.1", port, 1 << 20).unwrap();
    cfg.mqtt.broker = BrokerMode::External;
    cfg.mqtt.port = port;
    let mut c = doctor::run_checks(&cfg);
    for _ in 0..50 {
        if find(&c, "broker").status == CheckStatus::Ok {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        c = doctor::run_checks(&cfg);
    }
    assert_eq!(find(&c, "camera a").status, CheckStatus::Ok);
    assert_eq!(find(&c, "camera b").status, CheckStatus::Fail);
    assert_eq!(find(&c, "camera c").status, CheckStatus::Fail);
    assert_eq!(find(&c, "broker").status, CheckStatus::Ok, "{:?}", find(&c, "broker"));
    // Something that accepts TCP but is not an MQTT broker fails, as does nothing at all.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cfg.mqtt.port = listener.local_addr().unwrap().port();
    let c = doctor::run_checks(&cfg);
    assert_eq!(find(&c, "broker").status, CheckStatus::Fail, "{:?}", find(&c, "broker"));
    drop(listener);
    let c = doctor::run_checks(&cfg);
    assert_eq!(find(&c, "broker").status, CheckStatus::Fail, "{:?}", find(&c, "broker"));
}
