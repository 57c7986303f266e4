//! `docs/examples/kiosk_paho.py`, the documented Python kiosk (paho-mqtt 2.x, TCP_NODELAY on its
//! socket), against the daemon's embedded broker in MQTT 5 and 3.1.1. Skips (saying so) where
//! python3 has no paho-mqtt 2.x.

use crate::harness::daemon::*;
use crate::harness::mqtt::kiosk_when_ready;
use sgbd_edge::mqtt::kiosk::Protocol;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn paho_available() -> bool {
    // paho-mqtt 2.x (the example uses its CallbackAPIVersion; 1.x lacks it).
    let check = "import paho.mqtt.client as m; m.CallbackAPIVersion";
    match Command::new("python3").args(["-c", check]).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => true,
        _ => {
            eprintln!("skipping: python3 with paho-mqtt 2.x not available (pip install 'paho-mqtt>=2,<3')");
            false
        }
    }
}

/// Runs the example to its end (at most 60 s); its stdout lines as JSON.
fn run_example(args: &[String]) -> (bool, Vec<serde_json::Value>, String) {
    let mut child = Command::new("python3")
        .arg(crate::harness::repo("docs/examples/kiosk_paho.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let lines = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (out.status.success(), lines, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_example_kiosk_gets_acks_and_fast_replies() {
    // Round-trip times: a quiet machine.
    let _turn = crate::harness::exclusive();
    if !paho_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg = write_config(dir.path(), port, false, "");
    seed_catalog(&cfg, &["SKU1", "SKU2", "SKU3"]);
    let d = Daemon::spawn(&cfg);
    let _k = kiosk_when_ready(port, "k0", Protocol::V5).await;
    for (kiosk, p, v311) in [("kp5", port, false), ("kp4", port + 1, true)] {
        let p = p.to_string();
        let mut args: Vec<String> =
            ["--port", &p, "--store", "s1", "--node", "edge-t", "--kiosk", kiosk, "--user", "alice", "--sku", "SKU1"]
                .iter()
                .chain(&["--requests", "20"])
                .map(|s| s.to_string())
                .collect();
        if v311 {
            args.push("--v311".into());
        }
        let (ok, lines, text) = tokio::task::spawn_blocking(move || run_example(&args)).await.unwrap();
        assert!(ok, "{kiosk}: the example failed\n{text}\n{}", d.log_text());
        let ack = &lines[0]["ack"];
        assert_eq!(ack["stored"], true, "{text}");
        assert_eq!(lines[1]["ack_of_resend"]["duplicate"], true, "{text}");
        let reply = &lines[2]["reply"];
        assert!(reply["items"].as_array().is_some_and(|a| !a.is_empty()), "{text}");
        // TCP_NODELAY: no ~40 ms delayed-ACK wait per QoS 1 request (the median of 20).
        let mut ms: Vec<f64> = lines[2]["ms"].as_array().unwrap().iter().filter_map(|x| x.as_f64()).collect();
        ms.sort_by(f64::total_cmp);
        let median = ms[ms.len() / 2];
        eprintln!(
            "{kiosk} (MQTT {}): request -> reply median {median:.2} ms of {ms:?}",
            if v311 { "3.1.1" } else { "5" }
        );
        assert!(median < 25.0, "{kiosk}: median {median} ms: Nagle's algorithm on? {ms:?}");
    }
}
