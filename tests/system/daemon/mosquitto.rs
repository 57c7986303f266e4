//! The daemon binary against an external mosquitto (skipped with a message when mosquitto is not
//! installed): both protocol levels on one port, Last Will on kill -9, reconnect after a broker
//! restart with `online` and the birth republished.

use crate::harness::broker::Mosquitto;
use crate::harness::daemon::*;
use crate::harness::mqtt::*;
use sgbd_edge::mqtt::kiosk::{parse_reply, Protocol};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_on_mosquitto_lwt_and_reconnect() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let Some(mut mosq) = Mosquitto::start(dir.path()) else {
        return;
    };
    let port = mosq.port;
    let cfg = write_config(dir.path(), port, true, "");
    let base = topics().base;
    let status = format!("{base}/status");

    let mut d = Daemon::spawn(&cfg);
    let k5 = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let k4 = kiosk_when_ready(port, "k2", Protocol::V311).await;
    let mut obs = Observer::connect(port, "obs-m", &[status.clone(), format!("{base}/birth")], true, 0).await;
    assert!(obs.wait_text(&status, "online", T).await);

    let ack = k5.event("m-ev-1", "ann", "S1", "purchase", Some(T)).await.unwrap().unwrap();
    assert_eq!(ack.json["stored"], true);
    let r = k4.recommend("ann", Some(3), T).await.unwrap();
    assert!(r.json["request_id"].is_string());
    assert!(parse_reply(&r).unwrap().items.iter().all(|i| i.sku != "S1"));

    // Unclean death: the broker publishes the Last Will.
    d.signal(libc::SIGKILL);
    d.wait(T).expect("killed");
    assert!(obs.wait_text(&status, "offline", T).await, "no Last Will");

    // Start again; then restart the broker under it: it reconnects, says online, republishes birth.
    let _d2 = Daemon::spawn(&cfg);
    assert!(obs.wait_text(&status, "online", Duration::from_secs(20)).await);
    drop(obs);
    drop(k5);
    drop(k4);
    mosq.stop();
    // Forget the retained messages: what arrives now was republished by the daemon.
    mosq.wipe();
    tokio::time::sleep(Duration::from_millis(500)).await;
    mosq.resume();
    let mut obs = Observer::connect(port, "obs-m2", &[status.clone(), format!("{base}/birth")], true, 0).await;
    let k5 = kiosk_when_ready(port, "k1", Protocol::V5).await;
    assert!(obs.wait_text(&status, "online", Duration::from_secs(10)).await, "online not republished");
    let birth = obs.next_on(&format!("{base}/birth"), T).await.expect("birth after reconnect").json();
    assert_eq!(birth["node_id"], "edge-t");
    let rep = parse_reply(&k5.recommend("ann", Some(3), T).await.unwrap()).unwrap();
    assert!(rep.items.iter().all(|i| i.sku != "S1"));
}
