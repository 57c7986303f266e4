//! Crash safety: SIGKILL the daemon at random moments while kiosk events stream in, restart it,
//! and check after every kill that each acknowledged event (acks are sent after the commit) is
//! stored exactly once and that SQLite's `PRAGMA integrity_check` is ok.

use crate::harness::daemon::{free_port_pair, write_config, Daemon};
use crate::harness::mqtt::kiosk_when_ready;
use rand::Rng;
use sgbd_edge::mqtt::kiosk::Protocol;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KILLS: usize = 12;
/// An upper bound only: each run streams until its kill moment.
const EVENTS_PER_RUN: usize = 5000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_no_acknowledged_event() {
    // Kills 10 to 150 ms into a stream: the kills must land with events in flight.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg_path = write_config(dir.path(), port, false, "");
    let cfg = sgbd_edge::config::Config::load(&cfg_path).unwrap();
    let db = sgbd_edge::store::db_path(&cfg);
    let mut rng = rand::rng();
    let acked_all: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (mut sent, mut kills, mut mid_stream) = (0usize, 0usize, 0usize);
    let started = Instant::now();

    for run in 0..KILLS {
        let mut daemon = Daemon::spawn(&cfg_path);
        let kiosk = Arc::new(kiosk_when_ready(port, "k1", Protocol::V5).await);
        // Stream events, each waiting for its acknowledgement; kill at a random moment.
        let kill_after = Duration::from_millis(rng.random_range(10..150));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        let spawn_event = |i: usize| {
            // Every run also re-sends a few ids acknowledged before (must stay stored once).
            let id = if i % 50 == 7 && run > 0 { format!("r{}-e{}", run - 1, i) } else { format!("r{run}-e{i}") };
            let k = kiosk.clone();
            let acked = acked_all.clone();
            tokio::spawn(async move {
                let r = k
                    .event(
                        &id,
                        &format!("u{}", i % 17),
                        &format!("sku{}", i % 23),
                        "view",
                        Some(Duration::from_millis(1000)),
                    )
                    .await;
                if let Ok(Some(reply)) = r {
                    if reply.error_code().is_none()
                        && reply.json["stored"] == true
                        && reply.json["event_id"] == id.as_str()
                    {
                        acked.lock().unwrap().insert(id);
                        return true;
                    }
                }
                false
            })
        };
        let mut i = 0;
        while i < EVENTS_PER_RUN {
            tasks.push(spawn_event(i));
            i += 1;
            sent += 1;
            // Bursts of 25 concurrent events.
            if i % 25 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if t0.elapsed() >= kill_after {
                break;
            }
        }
        // A last burst of 100 just before the kill, so that on a fast, idle machine too the kill
        // lands while some are sent but not yet committed and acknowledged.
        for _ in 0..100 {
            tasks.push(spawn_event(i));
            i += 1;
            sent += 1;
        }
        tokio::task::yield_now().await;
        let left = kill_after.saturating_sub(t0.elapsed());
        tokio::time::sleep(left).await;
        daemon.signal(libc::SIGKILL);
        let st = daemon.wait(Duration::from_secs(10)).expect("daemon exits on SIGKILL");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL), "run {run}: {st:?}");
        kills += 1;
        let n_tasks = tasks.len();
        let mut acked_in_run = 0;
        for t in tasks {
            acked_in_run += t.await.unwrap_or(false) as usize;
        }
        // Killed with events in flight (sent, not acknowledged)?
        if acked_in_run < n_tasks {
            mid_stream += 1;
        }
        drop(kiosk);

        // The daemon is dead: check the database as it was left.
        let store = sgbd_edge::store::Store::open(&db, 5000).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok", "run {run}");
        let mut count: HashMap<String, usize> = HashMap::new();
        for e in store.interactions().unwrap().into_iter().chain(store.held_interactions().unwrap()) {
            *count.entry(e.event_id).or_default() += 1;
        }
        let acked = acked_all.lock().unwrap().clone();
        let missing: Vec<&String> = acked.iter().filter(|id| !count.contains_key(*id)).collect();
        assert!(missing.is_empty(), "run {run}: acknowledged but not stored: {missing:?}");
        let dup: Vec<(&String, &usize)> = count.iter().filter(|(_, n)| **n != 1).collect();
        assert!(dup.is_empty(), "run {run}: stored more than once: {dup:?}");
        drop(store);
        eprintln!(
            "run {run}: killed after {} ms, {} acknowledged so far, {} rows",
            kill_after.as_millis(),
            acked.len(),
            count.len()
        );
    }
    let acked = acked_all.lock().unwrap().len();
    eprintln!(
        "crash::kill: {kills} kills survived ({mid_stream} mid-stream), {sent} events sent, {acked} acknowledged and all stored once, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(kills, KILLS);
    assert!(mid_stream >= 2, "only {mid_stream} kills landed while events were in flight");
    assert!(acked > 0, "no event was ever acknowledged: the test did not exercise anything");
    // A last clean start proves the store still opens and serves after all those kills.
    let mut daemon = Daemon::spawn(&cfg_path);
    let k = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let r = k.recommend("u1", Some(3), Duration::from_secs(3)).await.unwrap();
    assert!(r.error_code().is_none(), "{}", r.json);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(15)).is_some_and(|s| s.success()));
}

/// `status` right after a SIGKILL: the daemon's last `status.json` is fresh and says it runs, but
/// its pid is gone, so the report says not running (stale) instead of running for two minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_after_sigkill_says_not_running() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg_path = write_config(dir.path(), port, false, "");
    let mut daemon = Daemon::spawn(&cfg_path);
    let _kiosk = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let status = |cfg: &std::path::Path| -> serde_json::Value {
        let out = crate::harness::daemon::bin().args(["status", "--json", "--config"]).arg(cfg).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let until = Instant::now() + Duration::from_secs(10);
    while status(&cfg_path)["daemon"]["running"] != true {
        assert!(Instant::now() < until, "status never said running\n{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10)).expect("killed");
    let v = status(&cfg_path);
    assert_eq!(v["daemon"]["running"], false, "{v}");
    assert!(v["daemon"]["age_s"].as_f64().is_some_and(|a| a < 60.0), "the file is fresh: {v}");
    let detail = v["daemon"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("stale") && detail.contains(&daemon.pid().to_string()), "{detail}");
}
