//! `bench serve`: the real daemon (in-process, embedded broker on loopback, temporary data dir)
//! driven by N simulated MQTT 5 kiosks.
//!
//! Rows, all measured in the same run:
//! - `ranker in memory`: one `Ranker::recommend` call (no MQTT) — the serving floor;
//! - `mqtt echo baseline`: request -> reply through the same broker with a trivial responder
//!   (transport cost only);
//! - `daemon recommend`: request publish -> reply received, at `--rate` requests/s spread over
//!   `--kiosks` kiosks (open loop);
//! - `daemon ingest (durable)`: events with an acknowledgement sent after the batch commit;
//!   `ingest baseline` is one `insert_event` (one transaction) per event on the same disk.

use crate::config::Config;
use crate::daemon::{self, DaemonOptions, ShutdownHandle};
use crate::mqtt::contract::Topics;
use crate::mqtt::kiosk::{parse_reply, KioskClient, Protocol};
use crate::serve::{PopularityRanker, Ranker, RequestCtx};
use crate::store::{Event, EventKind, NewItem, Store};
use crate::sys::now_ms;
use crate::telemetry::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct ServeBenchArgs {
    /// Concurrent simulated kiosks.
    #[arg(long, default_value_t = 10)]
    pub kiosks: usize,
    /// Total recommendation requests per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Events in flight per kiosk during the ingest phase.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Catalogue size of the synthetic store.
    #[arg(long, default_value_t = 2000)]
    pub items: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// One row of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub count: u64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServeBenchReport {
    pub kiosks: usize,
    pub target_rate: f64,
    pub seconds: u64,
    pub cpus: usize,
    pub rows: Vec<Row>,
}

fn row(name: &str, h: &Histogram, elapsed: Duration, failed: u64) -> Row {
    let s = h.summary();
    Row {
        name: name.into(),
        count: s.count,
        per_s: s.count as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: s.p50_ms,
        p99_ms: s.p99_ms,
        max_ms: s.max_ms,
        failed,
    }
}

pub(crate) fn seed_store(store: &mut Store, items: usize) -> Result<(), crate::store::StoreError> {
    for i in 0..items {
        store.upsert_item(&NewItem {
            sku: format!("sku{i:05}"),
            title: format!("item {i}"),
            description: String::new(),
            attributes: serde_json::json!({}),
            image_path: None,
        })?;
    }
    let kinds = EventKind::ALL;
    let evs: Vec<Event> = (0..20_000)
        .map(|i| Event {
            event_id: format!("seed-{i}"),
            user: format!("u{}", i % 500),
            sku: format!("sku{:05}", (i * 7919 + i / 3) % items.max(1)),
            kind: kinds[i % 4],
            ts_ms: i as i64,
            kiosk: None,
        })
        .collect();
    store.insert_events(&evs)?;
    Ok(())
}

/// Runs the benchmark in a temporary data directory.
pub fn run(a: &ServeBenchArgs) -> Result<ServeBenchReport, crate::daemon::DaemonError> {
    let dir = std::env::temp_dir().join(format!("sgbd-bench-serve-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir)?;
    let res = run_in(a, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

fn run_in(a: &ServeBenchArgs, dir: &std::path::Path) -> Result<ServeBenchReport, crate::daemon::DaemonError> {
    let port = crate::mqtt::broker::free_port_pair()
        .ok_or_else(|| daemon::DaemonError::Unsupported("no free port pair".into()))?;
    let mut cfg = Config::default();
    cfg.node.data_dir = dir.to_path_buf();
    cfg.mqtt.port = port;
    cfg.mqtt.stats_interval_s = 3600;
    cfg.serve.reply_cache_s = 0;
    // The benchmark measures capacity, not the per-kiosk request limit.
    cfg.mqtt.kiosk_rate_per_s = 0.0;
    {
        let mut s = crate::store::open_config(&cfg)?;
        seed_store(&mut s, a.items)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(bench(a, cfg, port))
}

async fn bench(a: &ServeBenchArgs, cfg: Config, port: u16) -> Result<ServeBenchReport, daemon::DaemonError> {
    let mut rows = Vec::new();
    let seconds = Duration::from_secs(a.seconds.max(1));
    let kiosks = a.kiosks.max(1);

    // Ranker floor, from the same store.
    {
        let store = crate::store::open_config(&cfg)?;
        let r = PopularityRanker::load(&store, &[EventKind::Purchase])?;
        let mut h = Histogram::default();
        let t0 = Instant::now();
        for i in 0..20_000 {
            let t = Instant::now();
            let rec = r.recommend(&format!("u{}", i % 600), 10, &RequestCtx { now_ms: 0, ..Default::default() });
            std::hint::black_box(rec);
            h.record(t.elapsed().as_secs_f64() * 1e3);
        }
        rows.push(row("ranker in memory (k=10)", &h, t0.elapsed(), 0));
    }

    let (handle, rx) = ShutdownHandle::new();
    let opts = DaemonOptions::default();
    let dcfg = cfg.clone();
    let daemon = tokio::spawn(async move { daemon::run(dcfg, opts, rx).await });
    let topics = Topics::from_config(&cfg);
    // Wait until the daemon answers.
    let probe =
        KioskClient::connect("127.0.0.1", port, topics.clone(), "probe", Protocol::V5, None, Duration::from_secs(10))
            .await?;
    let mut ready = false;
    for _ in 0..100 {
        if probe.recommend("u1", Some(1), Duration::from_millis(300)).await.is_ok() {
            ready = true;
            break;
        }
    }
    if !ready {
        handle.trigger();
        return Err(daemon::DaemonError::Unsupported("daemon did not answer".into()));
    }

    let mut clients = Vec::new();
    for i in 0..kiosks {
        clients.push(Arc::new(
            KioskClient::connect(
                "127.0.0.1",
                port,
                topics.clone(),
                &format!("bench{i}"),
                Protocol::V5,
                None,
                Duration::from_secs(10),
            )
            .await?,
        ));
    }

    // Transport baseline: an echo responder on the same broker.
    {
        use crate::mqtt::subscriber::{self, V5Loop};
        use rumqttc::v5::mqttbytes::v5::PublishProperties;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{AsyncClient, MqttOptions};
        let mut o = MqttOptions::new("bench-echo", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_network_options(crate::mqtt::network_options());
        let (echo, el) = AsyncClient::new(o, 4096);
        let filter = format!("{}/kiosk/+/echo", topics.base);
        let (ok_tx, ok_rx) = tokio::sync::oneshot::channel();
        let echo_task = subscriber::spawn(
            V5Loop(echo.clone(), el),
            filter,
            ok_tx,
            Duration::from_millis(50),
            |_| {},
            move |r| {
                if let Some(rt) = r.response_topic {
                    let pp = PublishProperties { correlation_data: r.correlation, ..Default::default() };
                    let _ = echo.try_publish_with_properties(rt, QoS::AtLeastOnce, false, r.payload, pp);
                }
            },
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), ok_rx).await;
        let (h, el, failed) = open_loop(&clients, a.rate, seconds, |c: Arc<KioskClient>| async move {
            let id = c.next_id();
            let topic = format!("{}/echo", c.reply_topic().trim_end_matches("/reply"));
            c.request_raw(&topic, br#"{"schema_version":"1.0","ts":0}"#.to_vec(), &id, Some(5), Duration::from_secs(2))
                .await
                .is_ok()
        })
        .await;
        rows.push(row("mqtt echo baseline", &h, el, failed));
        echo_task.abort();
    }

    // Daemon request -> reply.
    {
        let users = AtomicU64::new(0);
        let users = Arc::new(users);
        let (h, el, failed) = open_loop(&clients, a.rate, seconds, move |c: Arc<KioskClient>| {
            let u = users.fetch_add(1, Ordering::Relaxed);
            async move {
                match c.recommend(&format!("u{}", u % 600), Some(10), Duration::from_secs(2)).await {
                    Ok(r) => parse_reply(&r).map(|r| !r.items.is_empty()).unwrap_or(false),
                    Err(_) => false,
                }
            }
        })
        .await;
        rows.push(row("daemon recommend (request -> reply)", &h, el, failed));
    }

    // Durable ingest: every event acknowledged after its batch committed.
    {
        let h = Arc::new(Mutex::new(Histogram::default()));
        let failed = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let deadline = t0 + seconds;
        let mut tasks = Vec::new();
        for (ki, c) in clients.iter().enumerate() {
            for w in 0..a.window.max(1) {
                let c = c.clone();
                let h = h.clone();
                let failed = failed.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let id = format!("bench-{ki}-{w}-{n}-{}", now_ms());
                        n += 1;
                        let t = Instant::now();
                        match c
                            .event(
                                &id,
                                &format!("u{}", n % 600),
                                &format!("sku{:05}", n % 1000),
                                "view",
                                Some(Duration::from_secs(5)),
                            )
                            .await
                        {
                            Ok(Some(r)) if r.json.get("stored").and_then(|s| s.as_bool()) == Some(true) => {
                                if let Ok(mut h) = h.lock() {
                                    h.record(t.elapsed().as_secs_f64() * 1e3);
                                }
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        let el = t0.elapsed();
        let h = h.lock().map(|h| h.clone()).unwrap_or_default();
        rows.push(row("daemon ingest (durable, ack after commit)", &h, el, failed.load(Ordering::Relaxed)));
    }
    drop(clients);
    drop(probe);
    handle.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;

    // Baseline: one transaction per event on the same disk.
    {
        let store = crate::store::open_config(&cfg)?;
        let mut h = Histogram::default();
        let t0 = Instant::now();
        let mut i = 0u64;
        while t0.elapsed() < Duration::from_secs(2) {
            let t = Instant::now();
            store.insert_event(&Event {
                event_id: format!("base-{i}"),
                user: "u1".into(),
                sku: "sku00001".into(),
                kind: EventKind::View,
                ts_ms: 0,
                kiosk: None,
            })?;
            h.record(t.elapsed().as_secs_f64() * 1e3);
            i += 1;
        }
        rows.push(row("ingest baseline (1 event per transaction)", &h, t0.elapsed(), 0));
    }

    Ok(ServeBenchReport {
        kiosks,
        target_rate: a.rate,
        seconds: a.seconds,
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        rows,
    })
}

/// Open-loop load: `rate` calls per second in total, spread over the clients, for `dur`.
/// Returns the latency histogram of successful calls, the elapsed time, and failures.
pub(crate) async fn open_loop<F, Fut>(
    clients: &[Arc<KioskClient>],
    rate: f64,
    dur: Duration,
    f: F,
) -> (Histogram, Duration, u64)
where
    F: Fn(Arc<KioskClient>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let f = Arc::new(f);
    let h = Arc::new(Mutex::new(Histogram::default()));
    let failed = Arc::new(AtomicU64::new(0));
    let per = (rate / clients.len() as f64).max(0.1);
    let period = Duration::from_secs_f64(1.0 / per);
    let t0 = Instant::now();
    let mut drivers = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        let f = f.clone();
        let h = h.clone();
        let failed = failed.clone();
        drivers.push(tokio::spawn(async move {
            // Stagger the kiosks over one period.
            tokio::time::sleep(period.mul_f64(i as f64 / 16.0).min(period)).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = Vec::new();
            while t0.elapsed() < dur {
                tick.tick().await;
                let (c, f, h, failed) = (c.clone(), f.clone(), h.clone(), failed.clone());
                inflight.push(tokio::spawn(async move {
                    let t = Instant::now();
                    if f(c).await {
                        if let Ok(mut h) = h.lock() {
                            h.record(t.elapsed().as_secs_f64() * 1e3);
                        }
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    for d in drivers {
        let _ = d.await;
    }
    let el = t0.elapsed().min(dur + Duration::from_secs(2));
    let h = h.lock().map(|h| h.clone()).unwrap_or_default();
    (h, el, failed.load(Ordering::Relaxed))
}

impl std::fmt::Display for ServeBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "bench serve: {} kiosks, target {} requests/s, {} s per phase, {} CPUs",
            self.kiosks, self.target_rate, self.seconds, self.cpus
        )?;
        writeln!(
            f,
            "{:<44} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
            "", "count", "per s", "p50 ms", "p99 ms", "max ms", "failed"
        )?;
        for x in &self.rows {
            writeln!(
                f,
                "{:<44} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>7}",
                x.name, x.count, x.per_s, x.p50_ms, x.p99_ms, x.max_ms, x.failed
            )?;
        }
        Ok(())
    }
}

impl super::Report for ServeBenchReport {}
