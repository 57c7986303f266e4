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
    // Model files are absent in the temp models_dir: named, and only a warning (the config does
    // not require them: the denoiser runs degraded), so nothing fails.
    let models: Vec<_> = checks.iter().filter(|c| c.name.starts_with("model ")).collect();
    assert!(!models.is_empty());
    assert!(models.iter().all(|c| c.status == CheckStatus::Warn && c.detail.contains("missing")), "{models:#?}");
    assert!(!doctor::any_failed(&checks), "{checks:#?}");
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

#[test]
fn status_file_of_a_dead_pid_reads_as_not_running() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let now = sgbd_edge::sys::now_ms();
    let write = |pid: u32| {
        let v = serde_json::json!({"running": true, "pid": pid, "updated_at": now - 1_000, "uptime_s": 5,
            "broker": "127.0.0.1:1883", "broker_connected": true, "model_version": "popularity"});
        std::fs::write(dir.path().join("status.json"), v.to_string()).unwrap();
    };
    // A live pid (this test process): running.
    write(std::process::id());
    let s = doctor::daemon_state(dir.path(), now);
    assert!(s.running, "{s:?}");
    // A process that has exited and been reaped: its fresh file is stale.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    write(dead);
    let s = doctor::daemon_state(dir.path(), now);
    assert!(!s.running, "{s:?}");
    assert!(s.detail.contains("stale") && s.detail.contains(&format!("pid {dead}")), "{}", s.detail);
    assert_eq!(s.age_s, Some(1.0));
}

/// Restores the working directory when dropped (also when the test fails).
struct Cwd(std::path::PathBuf);

impl Drop for Cwd {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.0);
    }
}

/// The demo's layout: `data_dir = "./var"`, relative to the working directory. A version the
/// registry writes and activates (as a promotion does) checks out, also a row recorded by an
/// earlier build with the cwd-relative path `./var/registry/<v>`; a damaged file still fails.
#[test]
fn promoted_version_under_a_relative_data_dir_checks_out() {
    // Changes the process's working directory.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let _cwd = Cwd(std::env::current_dir().unwrap());
    std::env::set_current_dir(dir.path()).unwrap();
    let mut cfg = Config::default();
    cfg.node.data_dir = "./var".into();
    cfg.denoise.models_dir = "./models".into();
    let s = store::open_config(&cfg).unwrap();
    let reg = sgbd_edge::registry::Registry::from_config(&cfg);
    let metrics = serde_json::json!({"recall@20": 0.05});
    let write = |v: &str| {
        reg.write_version(v, None, "mf", &metrics, |d| {
            std::fs::write(d.join("weights.bin"), v.as_bytes())
                .map_err(|e| sgbd_edge::registry::RegistryError::Io { path: d.to_path_buf(), source: e })
        })
        .unwrap()
    };
    let w1 = write("v1");
    reg.register(&s, &w1, &metrics, ModelStatus::Active).unwrap();
    let c = doctor::run_checks(&cfg);
    let rec = find(&c, "recommender");
    assert_eq!(rec.status, CheckStatus::Ok, "{rec:?}");
    assert!(rec.detail.contains("v1"), "{rec:?}");

    // A row as an earlier build recorded it: the path relative to the trainer's cwd.
    let w2 = write("v2");
    s.insert_model_version(&NewModelVersion {
        version: "v2".into(),
        path: "./var/registry/v2".into(),
        sha256: w2.sha256.clone(),
        metrics: metrics.clone(),
        parent: Some("v1".into()),
        status: ModelStatus::Active,
    })
    .unwrap();
    let c = doctor::run_checks(&cfg);
    let rec = find(&c, "recommender");
    assert_eq!(rec.status, CheckStatus::Ok, "{rec:?}");
    assert!(rec.detail.contains("v2"), "{rec:?}");

    // A damaged file of the active version fails, naming it.
    std::fs::write(cfg.node.data_dir.join("registry/v2/weights.bin"), b"tampered").unwrap();
    let c = doctor::run_checks(&cfg);
    let rec = find(&c, "recommender");
    assert_eq!(rec.status, CheckStatus::Fail, "{rec:?}");
    assert!(rec.detail.contains("weights.bin"), "{rec:?}");
}

/// Model files the config requires (`denoise.require_models`) fail when missing; a file with the
/// wrong sha256 fails whether required or not.
#[test]
fn required_model_files_fail_when_missing_and_corrupt_files_always_fail() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_in(dir.path());
    cfg.denoise.caption_enabled = false;
    let minilm = |checks: &[Check]| -> Vec<Check> {
        checks.iter().filter(|c| c.name == "model all-minilm-l6-v2").cloned().collect()
    };
    let c = minilm(&doctor::run_checks(&cfg));
    assert!(!c.is_empty() && c.iter().all(|c| c.status == CheckStatus::Warn), "{c:#?}");

    cfg.denoise.require_models = true;
    let checks = doctor::run_checks(&cfg);
    let c = minilm(&checks);
    assert!(
        !c.is_empty() && c.iter().all(|c| c.status == CheckStatus::Fail && c.detail.contains("required")),
        "{c:#?}"
    );
    assert!(doctor::any_failed(&checks));

    // A corrupt file (the manifest pins MiniLM's sha256): FAIL, required or not.
    let model_dir = dir.path().join("models/all-MiniLM-L6-v2");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(model_dir.join("config.json"), b"{}").unwrap();
    for required in [true, false] {
        cfg.denoise.require_models = required;
        let checks = doctor::run_checks(&cfg);
        let bad = minilm(&checks).into_iter().find(|c| c.detail.contains("config.json")).expect("config.json line");
        assert_eq!(bad.status, CheckStatus::Fail, "required = {required}: {bad:?}");
        assert!(bad.detail.contains("expected"), "{bad:?}");
        assert!(doctor::any_failed(&checks));
    }
}
