//! `bench soak`: the real daemon (in-process, embedded broker, temporary store) under a steady
//! kiosk load (recommendation requests and acknowledged events) for `--minutes`. One row per
//! window: requests and events done, latency percentiles, errors, the process RSS — so that
//! growth over time (leaks, unbounded queues, a slowing store) shows. Training rounds join the
//! load once the learning loop runs inside the daemon (not in this build).

use super::serve::{open_loop, seed_store};
use crate::config::Config;
use crate::daemon::{self, DaemonError, DaemonOptions, ShutdownHandle};
use crate::mqtt::contract::{now_ms, Topics};
use crate::mqtt::kiosk::{parse_reply, KioskClient, Protocol};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// How long to run.
    #[arg(long, default_value_t = 1.0)]
    pub minutes: f64,
    /// Concurrent simulated kiosks.
    #[arg(long, default_value_t = 8)]
    pub kiosks: usize,
    /// Recommendation requests per second, all kiosks together.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Acknowledged events per second, all kiosks together.
    #[arg(long, default_value_t = 100.0)]
    pub events_rate: f64,
    /// Seconds per reported window.
    #[arg(long, default_value_t = 10)]
    pub window_s: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakWindow {
    pub t_s: f64,
    pub requests: u64,
    pub req_p50_ms: f64,
    pub req_p99_ms: f64,
    pub req_max_ms: f64,
    pub events: u64,
    pub ev_p99_ms: f64,
    pub errors: u64,
    pub rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub minutes: f64,
    pub kiosks: usize,
    pub rate: f64,
    pub events_rate: f64,
    pub windows: Vec<SoakWindow>,
    /// RSS of the last window minus the first (MiB).
    pub rss_growth_mib: f64,
    pub errors: u64,
}

/// Resident set size of this process in MiB (Linux `/proc/self/status`).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn run(a: &SoakArgs) -> Result<SoakReport, DaemonError> {
    let dir = std::env::temp_dir().join(format!("sgbd-bench-soak-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir)?;
    let res = run_in(a, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

fn run_in(a: &SoakArgs, dir: &std::path::Path) -> Result<SoakReport, DaemonError> {
    let port =
        crate::mqtt::broker::free_port_pair().ok_or_else(|| DaemonError::Unsupported("no free port pair".into()))?;
    let mut cfg = Config::default();
    cfg.node.data_dir = dir.to_path_buf();
    cfg.mqtt.port = port;
    cfg.mqtt.kiosk_rate_per_s = 0.0;
    {
        let mut s = crate::store::open_config(&cfg)?;
        seed_store(&mut s, 2000)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(soak(a, cfg, port))?;
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report).unwrap_or_default())?;
        println!("wrote {}", p.display());
    }
    Ok(report)
}

async fn soak(a: &SoakArgs, cfg: Config, port: u16) -> Result<SoakReport, DaemonError> {
    let (handle, rx) = ShutdownHandle::new();
    let dcfg = cfg.clone();
    let daemon = tokio::spawn(async move { daemon::run(dcfg, DaemonOptions::default(), rx).await });
    let topics = Topics::from_config(&cfg);
    let mut clients = Vec::new();
    for i in 0..a.kiosks.max(1) {
        let mut tries = 0;
        let c = loop {
            match KioskClient::connect(
                "127.0.0.1",
                port,
                topics.clone(),
                &format!("soak{i}"),
                Protocol::V5,
                None,
                Duration::from_secs(2),
            )
            .await
            {
                Ok(c) => break c,
                Err(e) if tries > 20 => {
                    handle.trigger();
                    return Err(e.into());
                }
                Err(_) => tries += 1,
            }
        };
        clients.push(Arc::new(c));
    }
    let total = Duration::from_secs_f64((a.minutes * 60.0).max(1.0));
    let window = Duration::from_secs(a.window_s.max(1)).min(total);
    let t0 = Instant::now();
    let seq = Arc::new(AtomicU64::new(0));
    let mut windows = Vec::new();
    println!(
        "{:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "t_s", "requests", "p50_ms", "p99_ms", "max_ms", "events", "ev_p99", "errors", "rss_MiB"
    );
    while t0.elapsed() < total {
        let s1 = seq.clone();
        let reqs = open_loop(&clients, a.rate, window, move |c: Arc<KioskClient>| {
            let u = s1.fetch_add(1, Ordering::Relaxed);
            async move {
                match c
                    .recommend(&format!("u{}", u % 600), Some(10), Duration::from_secs(2))
                    .await
                {
                    Ok(r) => parse_reply(&r).is_ok(),
                    Err(_) => false,
                }
            }
        });
        let s2 = seq.clone();
        let evs = open_loop(&clients, a.events_rate, window, move |c: Arc<KioskClient>| {
            let n = s2.fetch_add(1, Ordering::Relaxed);
            async move {
                let id = format!("soak-{n}-{}", now_ms());
                matches!(
                    c.event(&id, &format!("u{}", n % 600), &format!("sku{:05}", n % 2000), "view", Some(Duration::from_secs(5))).await,
                    Ok(Some(r)) if r.json.get("stored").and_then(|s| s.as_bool()) == Some(true)
                )
            }
        });
        let ((rh, _, rf), (eh, _, ef)) = tokio::join!(reqs, evs);
        let (r, e) = (rh.summary(), eh.summary());
        let w = SoakWindow {
            t_s: t0.elapsed().as_secs_f64(),
            requests: r.count,
            req_p50_ms: r.p50_ms,
            req_p99_ms: r.p99_ms,
            req_max_ms: r.max_ms,
            events: e.count,
            ev_p99_ms: e.p99_ms,
            errors: rf + ef,
            rss_mib: rss_mib(),
        };
        println!(
            "{:>7.1} {:>9} {:>8.2} {:>8.2} {:>8.1} {:>8} {:>8.1} {:>7} {:>8.1}",
            w.t_s, w.requests, w.req_p50_ms, w.req_p99_ms, w.req_max_ms, w.events, w.ev_p99_ms, w.errors, w.rss_mib
        );
        windows.push(w);
    }
    handle.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    let rss_growth_mib = match (windows.first(), windows.last()) {
        (Some(f), Some(l)) => l.rss_mib - f.rss_mib,
        _ => 0.0,
    };
    let errors = windows.iter().map(|w| w.errors).sum();
    println!("RSS growth first -> last window: {rss_growth_mib:+.1} MiB; errors: {errors}; training rounds: not in this build");
    Ok(SoakReport {
        minutes: a.minutes,
        kiosks: a.kiosks,
        rate: a.rate,
        events_rate: a.events_rate,
        windows,
        rss_growth_mib,
        errors,
    })
}
