//! A slow kiosk does not stall the others (issue 7, "Network faults").
//!
//! One kiosk subscribes to its reply topic, then never reads its socket again while it floods
//! recommendation requests and acknowledged events (all answered on that unread topic). Meanwhile
//! four well-behaved kiosks (two MQTT 5, two MQTT 3.1.1) send requests and acknowledged events:
//! every one of them must be answered, with a bounded latency, and every one of their events
//! stored once. Run against the daemon binary with its embedded broker (rumqttd) and against
//! mosquitto (skipped with a message when it is not installed).

use crate::harness::broker::Mosquitto;
use crate::harness::daemon::*;
use crate::harness::mqtt::*;
use crate::harness::netfault::*;
use rumqttc::QoS;
use sgbd_edge::mqtt::kiosk::{parse_reply, Protocol};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Generous bound for a loaded 2-core CI box: the point is "not stalled" (a stall is seconds).
const P99_BOUND_MS: f64 = 500.0;
const T: Duration = Duration::from_secs(5);

struct Normal {
    requests: Lat,
    events: Lat,
    failures: Vec<String>,
    event_ids: Vec<String>,
}

/// Four kiosks, each every 100 ms: one request and one acknowledged event (10 + 10 a second, under
/// the per-kiosk request limit), for `secs`. `ports`: (MQTT 5 port, MQTT 3.1.1 port).
async fn normal_kiosks(ports: (u16, u16), tag: &str, secs: u64) -> Normal {
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (proto, port) = if i % 2 == 0 { (Protocol::V5, ports.0) } else { (Protocol::V311, ports.1) };
        let kiosk = Arc::new(kiosk_when_ready(port, &format!("k{i}"), proto).await);
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut n =
                Normal { requests: Lat::default(), events: Lat::default(), failures: vec![], event_ids: vec![] };
            let until = Instant::now() + Duration::from_secs(secs);
            let mut j = 0;
            while Instant::now() < until {
                let tick = Instant::now();
                let user = format!("u{}", j % 13);
                let t0 = Instant::now();
                match kiosk
                    .recommend(&user, Some(5), T)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| parse_reply(&r).map_err(|e| e.to_string()))
                {
                    Ok(_) => n.requests.push(t0.elapsed()),
                    Err(e) => n.failures.push(format!("k{i} request {j}: {e}")),
                }
                let id = format!("{tag}-k{i}-e{j}");
                let t0 = Instant::now();
                match kiosk.event(&id, &user, &format!("S{}", j % 17), "view", Some(T)).await {
                    Ok(Some(a)) if a.json["stored"] == true && a.json["event_id"] == id.as_str() => {
                        n.events.push(t0.elapsed());
                        n.event_ids.push(id);
                    }
                    other => n.failures.push(format!("k{i} event {id}: {other:?}")),
                }
                j += 1;
                tokio::time::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed())).await;
            }
            n
        }));
    }
    let mut all = Normal { requests: Lat::default(), events: Lat::default(), failures: vec![], event_ids: vec![] };
    for t in tasks {
        let n = t.await.unwrap();
        all.requests.extend(&n.requests);
        all.events.extend(&n.events);
        all.failures.extend(n.failures);
        all.event_ids.extend(n.event_ids);
    }
    all
}

/// `ports`: (MQTT 5, MQTT 3.1.1) of the broker the daemon at `dir` uses.
async fn slow_kiosk_scenario(dir: &std::path::Path, ports: (u16, u16), broker: &str) {
    let secs: u64 = std::env::var("SGBD_SLOW_KIOSK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let t = topics();
    // Baseline in the same run: the same kiosks without the slow one.
    let base = normal_kiosks(ports, "base", 2).await;
    assert!(base.failures.is_empty(), "{broker} baseline: {:?}", base.failures);

    // Two slow kiosks: one subscribed at QoS 1 (never acknowledges), one at QoS 0 (fills the TCP
    // buffers), each flooding 500 requests and 500 acknowledged events a second.
    let mut slow: Vec<SlowKiosk> = [("slow1", QoS::AtLeastOnce), ("slow0", QoS::AtMostOnce)]
        .into_iter()
        .map(|(k, qos)| {
            let mut s = SlowKiosk::connect(ports.1, k, &t.kiosk_reply(k), qos);
            s.flood(&t.kiosk_recommend(k), &t.kiosk_events(k), &t.kiosk_reply(k), 5);
            s
        })
        .collect();
    // Let its backlog build up before the others start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = normal_kiosks(ports, "load", secs).await;
    let unread: Vec<usize> = slow.iter().map(|s| s.unread_bytes()).collect();
    let mut sent = 0;
    for s in &mut slow {
        s.stop();
        sent += s.sent.load(std::sync::atomic::Ordering::Relaxed);
    }
    // status.json is rewritten every 2 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let c = status_counters(&dir.join("var"));
    eprintln!(
        "netfault slow kiosk [{broker}]: baseline requests {} | events {}",
        base.requests.summary(),
        base.events.summary()
    );
    eprintln!(
        "netfault slow kiosk [{broker}]: with 2 slow kiosks ({sent} flood messages, reply bytes left unread QoS 1 / QoS 0: {unread:?}, {} rate-limited, {} replies dropped): requests {} | events {} | failures {}",
        counter(&c, "serve.rate_limited"),
        counter(&c, "mqtt.reply_dropped"),
        n.requests.summary(),
        n.events.summary(),
        n.failures.len()
    );
    // The scenario happened: the slow kiosk flooded, was answered, and did not read the answers.
    assert!(sent >= 1000, "{broker}: flood too small ({sent})");
    assert!(counter(&c, "serve.rate_limited") > 0, "{broker}: flood never hit the rate limit: {c}");
    assert!(unread.iter().all(|u| *u > 0), "{broker}: no reply ever reached a slow kiosk: {unread:?}");
    // The others were not stalled.
    assert!(
        n.failures.is_empty(),
        "{broker}: {} failures: {:?}",
        n.failures.len(),
        &n.failures[..n.failures.len().min(10)]
    );
    let expected = (secs * 10 * 4 / 2) as usize;
    assert!(n.requests.0.len() >= expected, "{broker}: only {} requests done", n.requests.0.len());
    for (what, l) in [("requests", &n.requests), ("events", &n.events)] {
        assert!(l.pct(99.0) < P99_BOUND_MS, "{broker}: {what} p99 {:.0} ms: {}", l.pct(99.0), l.summary());
    }
    // Every acknowledged event of the others is stored, once.
    let stored = stored_counts(&dir.join("var/sgbd.db"));
    for id in n.event_ids.iter().chain(&base.event_ids) {
        assert_eq!(stored.get(id), Some(&1), "{broker}: {id} stored {:?} times", stored.get(id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_kiosk_does_not_stall_others_embedded_broker() {
    // Floods the machine and bounds the others' p99 latency.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg = write_config(dir.path(), port, false, "");
    let mut d = Daemon::spawn(&cfg);
    slow_kiosk_scenario(dir.path(), (port, port + 1), "rumqttd").await;
    d.signal(libc::SIGTERM);
    assert!(d.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", d.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_kiosk_does_not_stall_others_mosquitto() {
    // Floods the machine and bounds the others' p99 latency.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let Some(mosq) = Mosquitto::start(dir.path()) else {
        return;
    };
    let cfg = write_config(dir.path(), mosq.port, true, "");
    let mut d = Daemon::spawn(&cfg);
    slow_kiosk_scenario(dir.path(), (mosq.port, mosq.port), "mosquitto").await;
    d.signal(libc::SIGTERM);
    assert!(d.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", d.log_text());
}
