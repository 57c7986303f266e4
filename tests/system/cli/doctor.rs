//! `doctor` and `status` through the binary: exit codes, the report lines and `status --json`.

use sgbd_edge::store::{self, Store};
use std::path::Path;

fn cli(args: &[&str], cfg_path: &Path) -> (i32, String) {
    let out =
        crate::harness::daemon::bin().args(args).arg("--config").arg(cfg_path).env_remove("RUST_LOG").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn cli_doctor_exit_codes_and_status_json() {
    let _turn = crate::harness::shared();
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
    // The pid of a live process (this test's): a status.json naming a dead pid reads as stale.
    let pid = std::process::id();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    std::fs::write(
        data.join("status.json"),
        serde_json::json!({"running": true, "pid": pid, "updated_at": now, "uptime_s": 60, "broker": "127.0.0.1:1883",
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
    assert_eq!(v["daemon"]["status"]["pid"], pid);
    let (code, out) = cli(&["status"], &cfg_path);
    assert_eq!(code, 0);
    assert!(
        out.contains("outbox backlog 1")
            && out.contains(&format!("running: pid {pid}"))
            && out.contains("stage ingest"),
        "{out}"
    );
}
