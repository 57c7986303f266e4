//! Broker outage (issue 7, "Network faults"): the daemon binary runs against mosquitto, which is
//! killed (SIGKILL) for `SGBD_OUTAGE_SECS` (default 20) while kiosks keep producing events and
//! messages pile up in the node's outbox, then started again on the same port and persistence.
//!
//! Kiosks are MQTT 5 / 3.1.1 clients with persistent sessions that send each event at QoS 1 and
//! wait for the node's acknowledgement (sent after the commit), sending the same `event_id` again
//! only if none came (the contract: events are idempotent by id). Checked afterwards: every event
//! the kiosks produced is acknowledged and stored exactly once; every event and every outbox
//! message reaches a fleet subscriber (persistent session) after the restart; the daemon's RSS
//! during the outage stays under 1.5 x its pre-outage value + 20 MiB; while disconnected, what
//! must be delivered waits in SQLite (the outbox), not in memory. Skipped (with a message) when
//! mosquitto is not installed.

use crate::harness::broker::Mosquitto;
use crate::harness::daemon::*;
use crate::harness::mqtt::*;
use crate::harness::netfault::*;
use sgbd_edge::mqtt::kiosk::{KioskClient, KioskSession, Protocol};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KIOSKS: usize = 3;
/// Events per second per kiosk.
const RATE: u64 = 20;
/// A kiosk without an acknowledgement sends again once connected this long.
const RESEND_AFTER_UP: Duration = Duration::from_secs(5);
/// Outbox rows written during the outage, per second.
const OUTBOX_RATE: u64 = 10;

/// The pid of the process whose command line holds `arg` (the broker started with our config).
fn pid_with_arg(arg: &str) -> Option<i32> {
    let mut found = None;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_broker = args.first().is_some_and(|a| a.ends_with(b"mosquitto"));
        // A killed, not yet reaped broker is a zombie with an empty command line: skipped.
        if is_broker && args.contains(&arg.as_bytes()) {
            found = Some(pid);
        }
    }
    found
}

#[derive(Default)]
struct Log {
    /// event id -> send attempts, for events produced by the kiosks.
    attempts: HashMap<String, u32>,
    acked: HashSet<String>,
}

/// One kiosk: an event every 1/RATE s until `stop`; each event is sent and its acknowledgement
/// awaited in its own task, and sent again (same id) when none came within `ack_timeout`.
fn spawn_kiosk(
    k: Arc<KioskClient>,
    name: String,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    ack_timeout: Duration,
) -> tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<()>>> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        let mut i = 0u64;
        let every = Duration::from_millis(1000 / RATE);
        let mut next = tokio::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let id = format!("{name}-e{i}");
            let (k, log) = (k.clone(), log.clone());
            let user = format!("u{}", i % 29);
            let sku = format!("S{}", i % 41);
            tasks.push(tokio::spawn(async move {
                loop {
                    log.lock().unwrap().attempts.entry(id.clone()).and_modify(|n| *n += 1).or_insert(1);
                    if let Ok(Some(r)) = k.event(&id, &user, &sku, "view", Some(ack_timeout)).await {
                        if r.json["stored"] == true && r.json["event_id"] == id.as_str() {
                            log.lock().unwrap().acked.insert(id);
                            return;
                        }
                    }
                    // No acknowledgement: while the broker is away the event still waits in the
                    // kiosk's queue; send it again only once the connection has been up a while.
                    while k.connected_for().is_none_or(|d| d < RESEND_AFTER_UP) {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }));
            i += 1;
            next += every;
            tokio::time::sleep_until(next).await;
        }
        tasks
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_nothing_lost_memory_bounded() {
    // Bounds the daemon's RSS and floods the broker for half a minute.
    let _turn = crate::harness::exclusive();
    let outage_s: u64 = std::env::var("SGBD_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let Some(mut mosq) = Mosquitto::start(dir.path()) else {
        return;
    };
    let port = mosq.port;
    // Started as root, mosquitto drops to user `mosquitto`, which cannot write its persistence into
    // the test's private temp dir: sessions would then not survive the restart (it retries the
    // save every second, so opening the directories up now is enough).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path().join("mosq-data"), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let conf_arg = dir.path().join("mosquitto.conf").display().to_string();
    // Without the learning loop: its rounds would mix training memory into the RSS figures.
    let cfg = write_config(dir.path(), port, true, "\n[online]\nenabled = false\n");
    let db = dir.path().join("var/sgbd.db");
    let t = topics();
    // The kiosks' items are catalogued (events for unknown SKUs are held, not forwarded).
    let skus: Vec<String> = (0..41).map(|i| format!("S{i}")).collect();
    seed_catalog(&cfg, &skus.iter().map(String::as_str).collect::<Vec<_>>());
    let mut daemon = Daemon::spawn(&cfg);
    let pid = daemon.pid();
    drop(kiosk_when_ready(port, "probe", Protocol::V5).await);

    // The fleet: a subscriber with a persistent session on the forwarded events and the test topic.
    let test_topic = format!("{}/netfault-outbox", t.base);
    let mut fleet =
        Observer::connect(port, "netfault-fleet", &[t.fleet_events(), test_topic.clone()], false, 3600).await;
    let session = |name: &str| KioskSession { client_id: format!("netfault-{name}"), expiry_s: 3600 };
    let mut kiosks = Vec::new();
    for i in 0..KIOSKS {
        let name = format!("k{i}");
        let proto = if i == 1 { Protocol::V311 } else { Protocol::V5 };
        let k = KioskClient::connect_session(
            "127.0.0.1",
            port,
            t.clone(),
            &name,
            proto,
            None,
            None,
            Some(session(&name)),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        kiosks.push((name, Arc::new(k)));
    }

    // RSS of the daemon every 250 ms, tagged with the phase.
    let phase = Arc::new(Mutex::new("warm-up"));
    let samples: Arc<Mutex<Vec<(&'static str, u64)>>> = Arc::default();
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (phase, samples, stop) = (phase.clone(), samples.clone(), sampler_stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    let p = *phase.lock().unwrap();
                    samples.lock().unwrap().push((p, kib));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    let log: Arc<Mutex<Log>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ack_timeout = Duration::from_secs(15);
    let producers: Vec<_> =
        kiosks.iter().map(|(n, k)| spawn_kiosk(k.clone(), n.clone(), log.clone(), stop.clone(), ack_timeout)).collect();

    // Warm-up under load, then kill the broker.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let acked_before = log.lock().unwrap().acked.len();
    assert!(acked_before > 0, "nothing acknowledged before the outage: {}", daemon.log_text());
    let broker_pid = pid_with_arg(&conf_arg).expect("mosquitto pid");
    *phase.lock().unwrap() = "outage";
    // SAFETY: kill(2) on the broker this test started (found by its own config path).
    unsafe {
        libc::kill(broker_pid, libc::SIGKILL);
    }
    let outage_start = Instant::now();

    // During the outage: what must be delivered is written to the outbox (as the learning loop's
    // announcements are), and it waits in SQLite.
    let producer_store = sgbd_edge::store::Store::open(&db, 5000).unwrap();
    let mut outbox_ids = Vec::new();
    let mut max_backlog_db = 0u64;
    let mut max_backlog_status = 0u64;
    let mut n = 0u64;
    while outage_start.elapsed() < Duration::from_secs(outage_s) {
        let id = format!("ob-{n}");
        producer_store.outbox_push(&test_topic, id.as_bytes(), 1, false).unwrap();
        outbox_ids.push(id);
        n += 1;
        if n.is_multiple_of(OUTBOX_RATE) {
            max_backlog_db = max_backlog_db.max(producer_store.outbox_len().unwrap());
            max_backlog_status =
                max_backlog_status.max(counter(&status_counters(&dir.path().join("var")), "outbox.backlog"));
        }
        tokio::time::sleep(Duration::from_millis(1000 / OUTBOX_RATE)).await;
    }
    drop(producer_store);
    let during = status_counters(&dir.path().join("var"));
    assert!(daemon.child.try_wait().unwrap().is_none(), "daemon died during the outage: {}", daemon.log_text());

    // The broker comes back on the same port and persistence.
    *phase.lock().unwrap() = "recovery";
    mosq.resume();
    let recovery_start = Instant::now();
    // Kiosks keep producing a little after the restart, then stop.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for p in producers {
        tasks.extend(p.await.unwrap());
    }
    let deadline = Duration::from_secs(outage_s + 120);
    for task in tasks {
        let left = deadline.saturating_sub(recovery_start.elapsed());
        let _ = tokio::time::timeout(left, task).await;
    }
    let all_acked_s = recovery_start.elapsed().as_secs_f64();

    // Every produced event acknowledged, and stored exactly once.
    let (produced, acked, resent) = {
        let l = log.lock().unwrap();
        let resent = l.attempts.values().filter(|n| **n > 1).count();
        (l.attempts.keys().cloned().collect::<Vec<_>>(), l.acked.clone(), resent)
    };
    let unacked: Vec<&String> = produced.iter().filter(|id| !acked.contains(*id)).collect();
    assert!(
        unacked.is_empty(),
        "{} events never acknowledged, e.g. {:?}",
        unacked.len(),
        &unacked[..unacked.len().min(5)]
    );
    let stored = stored_counts(&db);
    let not_once: Vec<(&String, Option<&usize>)> =
        produced.iter().map(|id| (id, stored.get(id))).filter(|(_, n)| *n != Some(&1)).collect();
    assert!(
        not_once.is_empty(),
        "{} of {} acknowledged events not stored exactly once, e.g. {:?}",
        not_once.len(),
        produced.len(),
        &not_once[..not_once.len().min(10)]
    );

    // The fleet got every forwarded event and every outbox message (at least once).
    let (mut fleet_events, mut fleet_outbox) = (HashSet::new(), HashSet::new());
    let fleet_until = Instant::now() + Duration::from_secs(60);
    let fleet_topic = t.fleet_events();
    while Instant::now() < fleet_until
        && (produced.iter().any(|id| !fleet_events.contains(id))
            || outbox_ids.iter().any(|id| !fleet_outbox.contains(id)))
    {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), fleet.rx.recv()).await else {
            continue;
        };
        if m.topic == fleet_topic {
            for e in m.json()["events"].as_array().cloned().unwrap_or_default() {
                if let Some(id) = e["event_id"].as_str() {
                    fleet_events.insert(id.to_string());
                }
            }
        } else if m.topic == test_topic {
            fleet_outbox.insert(m.text());
        }
    }
    let missing_events: Vec<&String> = produced.iter().filter(|id| !fleet_events.contains(*id)).collect();
    let missing_outbox: Vec<&String> = outbox_ids.iter().filter(|id| !fleet_outbox.contains(*id)).collect();
    sampler_stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let after = status_counters(&dir.path().join("var"));
    let backlog_left = sgbd_edge::store::Store::open(&db, 5000).unwrap().outbox_len().unwrap();

    // Memory.
    let samples = samples.lock().unwrap().clone();
    let max_in = |p: &str| samples.iter().filter(|s| s.0 == p).map(|s| s.1).max().unwrap_or(0);
    let pre = samples.iter().rev().find(|s| s.0 == "warm-up").map(|s| s.1).unwrap_or(0);
    let (out_max, rec_max) = (max_in("outage"), max_in("recovery"));
    eprintln!(
        "netfault outage: {outage_s} s broker outage (SIGKILL); {} events produced by {KIOSKS} kiosks ({acked_before} acknowledged before the kill), all acknowledged and stored once {all_acked_s:.1} s after the restart, {resent} sent again by a kiosk; fleet got {}/{} events and {}/{} outbox messages written during the outage (outbox backlog peak {max_backlog_db} rows, status.json {max_backlog_status}; {backlog_left} left); daemon RSS pre-outage {} KiB, outage max {} KiB, recovery max {} KiB; counters during: mqtt.publish_dropped={} mqtt.reply_dropped={} mqtt.disconnects={}; after: mqtt.reconnects={} mqtt.reply_dropped={} outbox.acked={}",
        produced.len(),
        produced.len() - missing_events.len(),
        produced.len(),
        outbox_ids.len() - missing_outbox.len(),
        outbox_ids.len(),
        pre,
        out_max,
        rec_max,
        counter(&during, "mqtt.publish_dropped"),
        counter(&during, "mqtt.reply_dropped"),
        counter(&during, "mqtt.disconnects"),
        counter(&after, "mqtt.reconnects"),
        counter(&after, "mqtt.reply_dropped"),
        counter(&after, "outbox.acked"),
    );
    let series: Vec<String> = samples.iter().step_by(4).map(|(p, k)| format!("{}:{}", &p[..1], k / 1024)).collect();
    eprintln!("netfault outage: RSS MiB every 1 s (w = warm-up, o = outage, r = recovery): {}", series.join(" "));
    {
        let l = log.lock().unwrap();
        for (name, _) in &kiosks {
            let mine: Vec<(&String, &u32)> =
                l.attempts.iter().filter(|(id, _)| id.starts_with(&format!("{name}-"))).collect();
            let re: Vec<u64> = mine
                .iter()
                .filter(|(_, n)| **n > 1)
                .filter_map(|(id, _)| id.rsplit('e').next()?.parse().ok())
                .collect();
            eprintln!(
                "netfault outage: {name}: {} events, {} resent (ids {:?}..{:?})",
                mine.len(),
                re.len(),
                re.iter().min(),
                re.iter().max()
            );
        }
    }
    eprintln!("netfault outage: counters after: {after}");
    assert!(
        missing_events.is_empty(),
        "{} events never reached the fleet, e.g. {:?}",
        missing_events.len(),
        &missing_events[..missing_events.len().min(5)]
    );
    assert!(
        missing_outbox.is_empty(),
        "{} outbox messages never reached the fleet, e.g. {:?}",
        missing_outbox.len(),
        &missing_outbox[..missing_outbox.len().min(5)]
    );
    assert_eq!(backlog_left, 0, "outbox not drained");
    // While disconnected the backlog sat in SQLite (the outbox), and the daemon saw it.
    assert!(max_backlog_db >= outbox_ids.len() as u64 / 2, "outbox backlog {max_backlog_db}");
    assert!(max_backlog_status > 0, "status.json never showed an outbox backlog");
    // Ephemeral messages (stats every second) were dropped and counted, not queued.
    assert!(counter(&during, "mqtt.publish_dropped") > 0, "{during}");
    assert!(pre > 0 && out_max > 0, "RSS not sampled");
    let bound = pre * 3 / 2 + 20 * 1024;
    assert!(out_max < bound, "RSS during the outage {out_max} KiB over {bound} KiB (pre-outage {pre} KiB)");

    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", daemon.log_text());
}
