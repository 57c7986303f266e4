//! Request rate limit per kiosk (`mqtt.kiosk_rate_per_s`, `mqtt.kiosk_burst`): a kiosk over its
//! rate gets `rate_limited` error replies and a `serve.rate_limited` count in stats, other kiosks
//! are not affected, and the kiosk is served again once its bucket refills.

use crate::harness::daemon::{free_port_pair, topics, write_config, Daemon};
use crate::harness::mqtt::{kiosk_when_ready, Observer};
use sgbd_edge::mqtt::kiosk::Protocol;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_kiosk_is_rate_limited_others_are_not() {
    // A token bucket of 2 per second: the counts depend on the request pace.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg = write_config(dir.path(), port, false, "kiosk_rate_per_s = 2.0\nkiosk_burst = 5\n");
    let mut daemon = Daemon::spawn(&cfg);
    let mut stats = Observer::connect(port, "obs-rl", &[topics().stats()], true, 0).await;
    // kiosk_when_ready spends one token of each kiosk.
    let flood = kiosk_when_ready(port, "flood", Protocol::V5).await;
    let calm = kiosk_when_ready(port + 1, "calm", Protocol::V311).await;

    let (mut ok, mut limited) = (0, 0);
    for _ in 0..30 {
        let r = flood.recommend("u1", Some(2), Duration::from_secs(3)).await.expect("a reply, even when limited");
        match r.error_code() {
            None => ok += 1,
            Some("rate_limited") => limited += 1,
            Some(other) => panic!("unexpected error {other}: {}", r.json),
        }
    }
    eprintln!("flood: {ok} served, {limited} rate_limited of 30");
    // Burst 5 (one used by the probe) plus ~2/s refill during the loop.
    assert!(limited >= 20, "only {limited} of 30 limited");
    assert!(ok >= 4, "burst not served: {ok}");

    // Another kiosk is unaffected.
    let r = calm.recommend("u2", Some(2), Duration::from_secs(3)).await.unwrap();
    assert!(r.error_code().is_none(), "{}", r.json);

    // Stats count the refusals.
    let mut seen = 0;
    for _ in 0..5 {
        if let Some(m) = stats.next_on(&topics().stats(), Duration::from_secs(3)).await {
            seen = m.json()["counters"]["serve.rate_limited"].as_u64().unwrap_or(0);
            if seen >= limited {
                break;
            }
        }
    }
    assert_eq!(seen, limited, "stats counter");

    // After a pause the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = flood.recommend("u1", Some(2), Duration::from_secs(3)).await.unwrap();
    assert!(r.error_code().is_none(), "{}", r.json);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(15)).is_some_and(|s| s.success()));
}
