//! `doctor` checks and the `status` report on temporary appliances.
#[allow(dead_code)]
#[path = "harness/mod.rs"]
mod harness;

use sgbd_edge::config::{BrokerMode, CameraConfig, CameraKind, Config};
use sgbd_edge::doctor::{self, Check, CheckStatus};
use sgbd_edge::store::{self, ModelStatus, NewModelVersion, Store};
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
    assert!(find(&checks, "database").detail.contains("schema 1, integrity ok, 1 items"));
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
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_in(dir.path());
    let s = store::open_config(&cfg).unwrap();
    std::fs::create_dir_all(cfg.node.data_dir.join("registry")).unwrap();
    std::fs::write(cfg.node.data_dir.join("registry/v1.bin"), b"weights").unwrap();
    let good = sgbd_edge::modelfiles::sha256_file(&cfg.node.data_dir.join("registry/v1.bin")).unwrap();
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cfg.mqtt.broker = BrokerMode::External;
    cfg.mqtt.port = listener.local_addr().unwrap().port();
    let c = doctor::run_checks(&cfg);
    assert_eq!(find(&c, "camera a").status, CheckStatus::Ok);
    assert_eq!(find(&c, "camera b").status, CheckStatus::Fail);
    assert_eq!(find(&c, "camera c").status, CheckStatus::Fail);
    assert_eq!(find(&c, "broker").status, CheckStatus::Ok);
    drop(listener);
    let c = doctor::run_checks(&cfg);
    assert_eq!(find(&c, "broker").status, CheckStatus::Fail, "{:?}", find(&c, "broker"));
}

fn cli(args: &[&str], cfg_path: &Path) -> (i32, String) {
    let out = harness::daemon::bin()
        .args(args)
        .arg("--config")
        .arg(cfg_path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn cli_doctor_exit_codes_and_status_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var");
    let cfg_path = dir.path().join("c.toml");
    std::fs::write(&cfg_path, format!("[node]\ndata_dir = {:?}\n", data.display().to_string())).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("sgbd.db"), vec![7u8; 4096]).unwrap();
    let (code, out) = cli(&["doctor"], &cfg_path);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().any(|l| l.starts_with("FAIL database") && l.contains("sgbd.db")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("ok   disk")), "{out}");

    let bad_cfg = dir.path().join("bad.toml");
    std::fs::write(&bad_cfg, "[store]\nbusy_timeout_ms = \"soon\"\n").unwrap();
    let (code, out) = cli(&["doctor"], &bad_cfg);
    assert_eq!(code, 1);
    assert!(out.starts_with("FAIL config"), "{out}");

    // A good database and a fresh status.json from a running daemon.
    std::fs::remove_file(data.join("sgbd.db")).unwrap();
    let mut s = Store::open(&data.join("sgbd.db"), 1000).unwrap();
    s.insert_events(&[store::Event {
        event_id: "e".into(),
        user: "u".into(),
        sku: "A".into(),
        kind: store::EventKind::Scan,
        ts_ms: 1,
        kiosk: None,
    }])
    .unwrap();
    s.outbox_push("t", b"x", 1, false).unwrap();
    drop(s);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    std::fs::write(
        data.join("status.json"),
        serde_json::json!({"running": true, "pid": 1234, "updated_at": now, "uptime_s": 60, "broker": "127.0.0.1:1883",
            "broker_connected": true, "model_version": "none", "stages": {"ingest": {"last_beat_ms_ago": 10, "ok": true}}})
        .to_string(),
    )
    .unwrap();
    let (code, out) = cli(&["status", "--json"], &cfg_path);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["counts"]["interactions"], 1);
    assert_eq!(v["counts"]["users"], 1);
    assert_eq!(v["counts"]["outbox"], 1);
    assert_eq!(v["daemon"]["running"], true);
    assert_eq!(v["daemon"]["status"]["pid"], 1234);
    let (code, out) = cli(&["status"], &cfg_path);
    assert_eq!(code, 0);
    assert!(
        out.contains("outbox backlog 1") && out.contains("running: pid 1234") && out.contains("stage ingest"),
        "{out}"
    );
}
