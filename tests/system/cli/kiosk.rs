//! `sgbd-edge kiosk`: prints the reply JSON, exit 0; exit 3 when nothing answers in time.

use crate::harness::daemon::*;
use crate::harness::mqtt::*;
use sgbd_edge::mqtt::kiosk::Protocol;

fn kiosk(cfg: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = bin().args(["kiosk", "--config"]).arg(cfg).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_cli_event_recommend_and_timeout() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg = write_config(dir.path(), port, false, "");

    // Nothing listens yet: exit 3.
    let (code, _) = kiosk(&cfg, &["--kiosk", "k1", "--user", "u", "--recommend", "--timeout-ms", "500"]);
    assert_eq!(code, 3);

    seed_catalog(&cfg, &["A1"]);
    let _d = Daemon::spawn(&cfg);
    let _k = kiosk_when_ready(port, "k0", Protocol::V5).await;
    let (code, out) =
        kiosk(&cfg, &["--kiosk", "k1", "--user", "u1", "--event", "purchase", "--item", "A1", "--event-id", "cli-1"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stored"], true);
    assert_eq!(v["event_id"], "cli-1");
    assert!(v.get("code").is_none() && v.get("duplicate").is_none(), "{v}");
    // An item the catalogue does not hold: acknowledged with a code, never recommended.
    let (code, out) =
        kiosk(&cfg, &["--kiosk", "k1", "--user", "u1", "--event", "purchase", "--item", "B9", "--event-id", "cli-2"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["stored"].clone(), v["code"].clone()), (true.into(), "unknown_item".into()), "{v}");

    for extra in [&[][..], &["--v311"][..]] {
        let mut args = vec!["--kiosk", "k1", "--user", "u2", "--recommend", "--k", "3"];
        args.extend_from_slice(extra);
        let (code, out) = kiosk(&cfg, &args);
        assert_eq!(code, 0, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["model_version"], "popularity");
        assert_eq!(v["items"][0]["sku"], "A1", "{v}");
        assert_eq!(v["items"].as_array().unwrap().len(), 1, "only catalogue items: {v}");
    }
}
