//! A short soak through the command line: the real daemon binary as a child process under kiosk
//! load, with a fine-tune round. Asserts that no acknowledged event is lost, that a round
//! completed, and that the daemon's RSS was sampled per window and it stopped cleanly.

use crate::harness::daemon::bin;

#[test]
fn short_soak_loses_no_event_and_completes_a_round() {
    // Samples the daemon's RSS per window under kiosk load, with a training round.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let out = bin()
        .args([
            "bench",
            "soak",
            "--minutes",
            "0.34",
            "--window-s",
            "5",
            "--warmup-s",
            "5",
            "--kiosks",
            "4",
            "--rate",
            "40",
            "--events-rate",
            "40",
            "--round-interval-s",
            "8",
            "--json",
        ])
        .arg(&json)
        .env_remove("SGBD_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap();

    assert!(n("events_sent") >= 400, "{r}");
    assert!(n("events_acked") > 0, "{r}");
    assert_eq!(n("events_lost"), 0, "acknowledged events missing from the store: {r}");
    assert!(n("events_stored") >= n("events_acked"), "{r}");
    let rounds = &r["rounds"];
    let (run, failed) = (rounds["run"].as_u64().unwrap(), rounds["failed"].as_u64().unwrap());
    assert!(run > failed, "no completed training round: {rounds}");
    assert_eq!(rounds["promoted"].as_u64().unwrap() + rounds["rejected"].as_u64().unwrap(), run - failed, "{rounds}");
    assert!(!rounds["durations_s"].as_array().unwrap().is_empty(), "{rounds}");

    let windows = r["windows"].as_array().unwrap();
    assert!(windows.len() >= 3, "{r}");
    assert!(windows.iter().all(|w| w["daemon_rss_mib"].as_f64().unwrap() > 1.0), "{r}");
    assert!(windows.iter().any(|w| !w["warmup"].as_bool().unwrap()), "{r}");
    assert!(windows.iter().map(|w| w["requests"].as_u64().unwrap()).sum::<u64>() > 0);
    assert!(r["clean_exit"].as_bool().unwrap(), "daemon did not stop cleanly: {r}");
}
