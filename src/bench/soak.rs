//! `bench soak`: the real daemon binary (`sgbd-edge run`, embedded broker or, with `--broker
//! mosquitto`, an external mosquitto as a third process; temporary data dir; the learning loop on)
//! as a child process under a steady kiosk load from this process
//! (recommendation requests and acknowledged events) for `--minutes`, with fine-tune rounds every
//! `--round-interval-s`.
//!
//! The daemon runs in its own process so that its resident memory is measured alone
//! (`/proc/<pid>/status`), apart from the load generator's. One row per window: requests and
//! events done in the window, latency percentiles (fixed-bucket histograms, so the generator's
//! memory does not grow either), errors, the daemon's RSS and the rounds so far. Windows that end
//! before `--warmup-s` are warm-up (caches filling, the first model loading); the verdict compares
//! the last window's RSS with the first window after warm-up (target: within 10 %).
//!
//! After the daemon has stopped (SIGTERM, clean drain), the store is opened and every event the
//! daemon acknowledged is looked up by id: an acknowledged event that is not there is lost.

use super::serve::seed_store;
use crate::config::Config;
use crate::daemon::DaemonError;
use crate::learn::model::ModelKind;
use crate::mqtt::contract::Topics;
use crate::mqtt::kiosk::{parse_reply, KioskClient, Protocol};
use crate::sys::now_ms;
use crate::telemetry::{Histogram, LatencySummary};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Allowed RSS growth after warm-up (the target).
pub const RSS_TARGET_PCT: f64 = 10.0;

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
    /// Windows that end before this many seconds are warm-up (not in the RSS verdict). At the
    /// default load the embedded broker's per-filter logs (3 x 1 MiB) reach their bound in about
    /// two minutes.
    #[arg(long, default_value_t = 120)]
    pub warmup_s: u64,
    /// Seconds between fine-tune rounds (`online.min_interval_s`); 0 turns training off.
    #[arg(long, default_value_t = 45)]
    pub round_interval_s: u64,
    /// Catalogue size of the synthetic store (20,000 seed interactions over 500 users).
    #[arg(long, default_value_t = 2000)]
    pub items: usize,
    /// `embedded`: the daemon's own rumqttd (production default; its memory counts as the
    /// daemon's). `mosquitto`: an external mosquitto (from PATH) as a third process, so that the
    /// daemon's RSS excludes the broker's and the broker's is reported apart.
    #[arg(long, value_enum, default_value_t = SoakBroker::Embedded)]
    pub broker: SoakBroker,
    /// The daemon binary (default: this executable).
    #[arg(long)]
    pub daemon_bin: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SoakBroker {
    Embedded,
    Mosquitto,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakWindow {
    /// Seconds since the load started, at the end of the window.
    pub t_s: f64,
    pub warmup: bool,
    pub requests: u64,
    pub req_p50_ms: f64,
    pub req_p99_ms: f64,
    pub req_max_ms: f64,
    pub events: u64,
    pub ev_p50_ms: f64,
    pub ev_p99_ms: f64,
    /// Failed or timed-out requests and events in the window.
    pub errors: u64,
    /// The daemon's resident set (MiB).
    pub daemon_rss_mib: f64,
    /// The external broker's resident set (MiB), with `--broker mosquitto`.
    pub broker_rss_mib: Option<f64>,
    /// The load generator's own resident set (MiB), for reference.
    pub loadgen_rss_mib: f64,
    /// Fine-tune rounds finished so far (daemon counter `online.rounds`).
    pub rounds: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundsReport {
    pub run: u64,
    pub promoted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Wall time of each round that registered a version (`round_s` of its metrics), oldest first.
    pub durations_s: Vec<f64>,
    /// The daemon's `online.round_ms` histogram (every round, failed ones too).
    pub round_ms: Option<LatencySummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub minutes: f64,
    pub kiosks: usize,
    pub rate: f64,
    pub events_rate: f64,
    pub warmup_s: u64,
    pub round_interval_s: u64,
    pub broker: SoakBroker,
    /// Seconds per window (`--window-s`, at most the whole run).
    pub window_s: u64,
    pub windows: Vec<SoakWindow>,
    pub events_sent: u64,
    pub events_acked: u64,
    /// Soak events found in the store after the daemon stopped.
    pub events_stored: u64,
    /// Acknowledged but not in the store.
    pub events_lost: u64,
    /// Sent without an acknowledgement (timeout or error); `events_unacked_stored` of them were stored.
    pub events_unacked: u64,
    pub events_unacked_stored: u64,
    pub errors: u64,
    /// Daemon RSS in the first window after warm-up, the last window, and the highest after warm-up.
    pub rss_base_mib: f64,
    pub rss_last_mib: f64,
    pub rss_max_mib: f64,
    /// (last - base) / base, in %.
    pub rss_growth_pct: f64,
    /// `rss_growth_pct <= RSS_TARGET_PCT` (false when no window is past warm-up).
    pub rss_pass: bool,
    /// The daemon's peak RSS (VmHWM) at the end.
    pub daemon_peak_rss_mib: f64,
    pub rounds: RoundsReport,
    /// The daemon exited 0 after SIGTERM.
    pub clean_exit: bool,
    /// Warnings and errors in the daemon's log.
    pub daemon_log_warnings: u64,
    pub daemon_log_errors: u64,
    /// The first few warning and error lines of the daemon's log.
    pub daemon_log_samples: Vec<String>,
    /// The daemon's counters at shutdown (its final status.json).
    pub daemon_counters: BTreeMap<String, u64>,
}

impl super::Report for SoakReport {
    /// Zero lost events, no errors, RSS flat, a clean exit, and a completed round when training was on.
    fn passed(&self) -> bool {
        self.events_lost == 0
            && self.errors == 0
            && self.rss_pass
            && self.clean_exit
            && (self.round_interval_s == 0 || self.rounds.run > self.rounds.failed)
    }
}

/// A `/proc/<pid>/status` field in MiB (Linux), e.g. `VmRSS`, `VmHWM`; 0 when unknown.
pub fn proc_status_mib(pid: &str, field: &str) -> f64 {
    crate::sys::proc_status_kib(pid, field).map_or(0.0, |kb| kb as f64 / 1024.0)
}

/// Resident set size of this process in MiB.
pub fn rss_mib() -> f64 {
    proc_status_mib("self", "VmRSS")
}

/// The configuration the soak's daemon runs with: loopback embedded broker, no per-kiosk request
/// limit (the load is the point), and, with `round_interval_s > 0`, a small MF model (64-d, up to
/// 20 epochs, patience 5, 1 training thread) so that a round on the soak's store takes a few seconds.
pub fn daemon_config(dir: &Path, port: u16, round_interval_s: u64, broker: SoakBroker) -> Config {
    let mut cfg = Config::default();
    if broker == SoakBroker::Mosquitto {
        cfg.mqtt.broker = crate::config::BrokerMode::External;
        cfg.mqtt.host = "127.0.0.1".into();
    }
    cfg.node.data_dir = dir.to_path_buf();
    cfg.mqtt.port = port;
    cfg.mqtt.kiosk_rate_per_s = 0.0;
    cfg.log.format = crate::config::LogFormat::Json;
    cfg.online.enabled = round_interval_s > 0;
    cfg.online.min_interval_s = round_interval_s;
    cfg.online.min_new_events = 100;
    cfg.online.poll_s = 1;
    cfg.online.epochs = 20;
    cfg.online.patience = 5;
    cfg.online.time_budget_s = 20;
    cfg.online.train_threads = 1;
    cfg.learn.model = ModelKind::Mf;
    cfg.learn.dim = 64;
    cfg.learn.batch = 1024;
    cfg
}

pub fn run(a: &SoakArgs) -> Result<SoakReport, DaemonError> {
    let bin = match &a.daemon_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let dir = std::env::temp_dir().join(format!("sgbd-bench-soak-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir)?;
    let res = run_in(a, &bin, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// A child process (the daemon, mosquitto); killed if still running when dropped.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then wait up to `grace` for a clean exit (SIGKILL after it). True on exit code 0.
    fn stop(&mut self, grace: Duration) -> bool {
        let _ = crate::sys::terminate(self.child.id());
        let t = Instant::now();
        while t.elapsed() < grace {
            if let Some(st) = self.exited() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::error!("daemon did not stop within {grace:?} of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_status(dir: &Path) -> Option<serde_json::Value> {
    let s = std::fs::read_to_string(crate::daemon::health::status_path(dir)).ok()?;
    serde_json::from_str(&s).ok()
}

fn counter(status: &Option<serde_json::Value>, name: &str) -> u64 {
    status.as_ref().and_then(|s| s.get("counters")).and_then(|c| c.get(name)).and_then(|v| v.as_u64()).unwrap_or(0)
}

fn run_in(a: &SoakArgs, bin: &Path, dir: &Path) -> Result<SoakReport, DaemonError> {
    let port =
        crate::mqtt::broker::free_port_pair().ok_or_else(|| DaemonError::Unsupported("no free port pair".into()))?;
    let cfg = daemon_config(dir, port, a.round_interval_s, a.broker);
    {
        let mut s = crate::store::open_config(&cfg)?;
        seed_store(&mut s, a.items.max(1))?;
    }
    let cfg_path = dir.join("soak.toml");
    let toml = toml::to_string(&cfg).map_err(|e| DaemonError::Unsupported(format!("config not serialised: {e}")))?;
    std::fs::write(&cfg_path, toml)?;
    let mut broker = match a.broker {
        SoakBroker::Embedded => None,
        SoakBroker::Mosquitto => Some(start_mosquitto(dir, port)?),
    };
    let log = dir.join("daemon.log");
    let log_file = std::fs::File::create(&log)?;
    let child = std::process::Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&cfg_path)
        .env_remove("SGBD_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| DaemonError::Unsupported(format!("cannot start the daemon {}: {e}", bin.display())))?;
    let mut daemon = Daemon { child, log };

    // Ready once status.json says running with the broker connected.
    let t = Instant::now();
    loop {
        if let Some(st) = daemon.exited() {
            return Err(DaemonError::Unsupported(format!("daemon exited at start ({st}):\n{}", daemon.log_tail())));
        }
        let s = read_status(dir);
        let ready = s.as_ref().is_some_and(|s| {
            s.get("running").and_then(|v| v.as_bool()) == Some(true)
                && s.get("broker_connected").and_then(|v| v.as_bool()) == Some(true)
        });
        if ready {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(DaemonError::Unsupported(format!("daemon not ready after 60 s:\n{}", daemon.log_tail())));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let broker_pid = broker.as_ref().map(|b| b.pid());
    let load = rt.block_on(drive(a, &cfg, port, &mut daemon, broker_pid.as_deref(), dir));
    let clean_exit = daemon.stop(Duration::from_secs(60));
    if let Some(b) = broker.as_mut() {
        b.stop(Duration::from_secs(5));
    }
    drop(rt);
    let load = load?;

    let final_status = read_status(dir);
    let counters: BTreeMap<String, u64> = final_status
        .as_ref()
        .and_then(|s| s.get("counters"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let round_ms =
        final_status.as_ref().and_then(|s| s.get("latencies")).and_then(|l| l.get("online.round_ms")).and_then(|v| {
            Some(LatencySummary {
                count: v.get("count")?.as_u64()?,
                p50_ms: v.get("p50_ms")?.as_f64()?,
                p90_ms: v.get("p90_ms")?.as_f64()?,
                p99_ms: v.get("p99_ms")?.as_f64()?,
                max_ms: v.get("max_ms")?.as_f64()?,
            })
        });

    // Every acknowledged event must be in the store.
    let store = crate::store::open_config(&cfg)?;
    let stored: HashSet<String> =
        store.interactions()?.into_iter().filter(|e| e.event_id.starts_with("soak-")).map(|e| e.event_id).collect();
    let mut versions = store.model_versions()?;
    versions.sort_by_key(|v| v.created_ms);
    drop(store);
    let (acked, unacked) = (&load.acked, &load.unacked);
    let id = |n: &u64| format!("soak-{n}");
    let events_lost = acked.iter().filter(|n| !stored.contains(&id(n))).count() as u64;
    let events_unacked_stored = unacked.iter().filter(|n| stored.contains(&id(n))).count() as u64;

    let log_text = std::fs::read_to_string(&daemon.log).unwrap_or_default();
    let level_lines = |lvl: &str| {
        let pat = format!("\"level\":\"{lvl}\"");
        log_text.lines().filter(|l| l.contains(&pat)).count() as u64
    };

    let windows = load.windows;
    let rss = RssVerdict::of(&windows);
    let rounds = RoundsReport {
        run: counters.get("online.rounds").copied().unwrap_or(0),
        promoted: counters.get("online.promoted").copied().unwrap_or(0),
        rejected: counters.get("online.rejected").copied().unwrap_or(0),
        failed: counters.get("online.round_failed").copied().unwrap_or(0),
        durations_s: versions.iter().filter_map(|v| v.metrics.get("round_s").and_then(|x| x.as_f64())).collect(),
        round_ms,
    };
    Ok(SoakReport {
        minutes: a.minutes,
        kiosks: a.kiosks,
        rate: a.rate,
        events_rate: a.events_rate,
        warmup_s: a.warmup_s,
        round_interval_s: a.round_interval_s,
        broker: a.broker,
        window_s: load.window_s,
        events_sent: load.sent,
        events_acked: acked.len() as u64,
        events_stored: stored.len() as u64,
        events_lost,
        events_unacked: unacked.len() as u64,
        events_unacked_stored,
        errors: windows.iter().map(|w| w.errors).sum::<u64>() + load.late_errors,
        rss_base_mib: rss.base_mib,
        rss_last_mib: rss.last_mib,
        rss_max_mib: rss.max_mib,
        rss_growth_pct: rss.growth_pct,
        rss_pass: rss.pass,
        daemon_peak_rss_mib: load.peak_rss_mib,
        rounds,
        clean_exit,
        daemon_log_warnings: level_lines("WARN"),
        daemon_log_errors: level_lines("ERROR"),
        daemon_log_samples: log_text
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .take(10)
            .map(str::to_string)
            .collect(),
        daemon_counters: counters,
        windows,
    })
}

/// The daemon's RSS after warm-up: the first window past it (`base`), the last, the highest, growth
/// `(last - base) / base` in %, and whether it is within [`RSS_TARGET_PCT`] (false without any
/// window past warm-up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssVerdict {
    pub base_mib: f64,
    pub last_mib: f64,
    pub max_mib: f64,
    pub growth_pct: f64,
    pub pass: bool,
}

impl RssVerdict {
    pub fn of(windows: &[SoakWindow]) -> Self {
        let post: Vec<f64> = windows.iter().filter(|w| !w.warmup).map(|w| w.daemon_rss_mib).collect();
        let base = post.first().copied().unwrap_or(0.0);
        let last = post.last().copied().unwrap_or(0.0);
        let growth_pct = if base > 0.0 { (last - base) / base * 100.0 } else { 0.0 };
        Self {
            base_mib: base,
            last_mib: last,
            max_mib: post.iter().copied().fold(0.0, f64::max),
            growth_pct,
            pass: base > 0.0 && growth_pct <= RSS_TARGET_PCT,
        }
    }
}

/// What one window's calls recorded.
#[derive(Default)]
struct WindowAcc {
    req: Histogram,
    ev: Histogram,
    errors: u64,
}

struct Shared {
    acc: Mutex<WindowAcc>,
    acked: Mutex<Vec<u64>>,
    unacked: Mutex<Vec<u64>>,
    sent: AtomicU64,
    seq: AtomicU64,
    inflight: AtomicU64,
    stop: AtomicBool,
}

struct LoadResult {
    window_s: u64,
    windows: Vec<SoakWindow>,
    acked: Vec<u64>,
    unacked: Vec<u64>,
    sent: u64,
    /// Failures that completed after the last window.
    late_errors: u64,
    peak_rss_mib: f64,
}

/// Starts one open-loop driver per kiosk and kind; each issues a call every period until `stop`.
fn spawn_drivers(clients: &[Arc<KioskClient>], sh: &Arc<Shared>, rate: f64, events: bool) {
    if rate <= 0.0 {
        return;
    }
    let per = rate / clients.len() as f64;
    let period = Duration::from_secs_f64(1.0 / per.max(0.01));
    for (i, c) in clients.iter().enumerate() {
        let (c, sh) = (c.clone(), sh.clone());
        let offset = period.mul_f64(i as f64 / clients.len() as f64);
        tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if sh.stop.load(Ordering::Relaxed) {
                    break;
                }
                let (c, sh) = (c.clone(), sh.clone());
                sh.inflight.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let t = Instant::now();
                    let n = sh.seq.fetch_add(1, Ordering::Relaxed);
                    let ok = if events { send_event(&c, &sh, n).await } else { request(&c, n).await };
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    if let Ok(mut acc) = sh.acc.lock() {
                        match (ok, events) {
                            (true, true) => acc.ev.record(ms),
                            (true, false) => acc.req.record(ms),
                            (false, _) => acc.errors += 1,
                        }
                    }
                    sh.inflight.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
    }
}

async fn request(c: &KioskClient, n: u64) -> bool {
    match c.recommend(&format!("u{}", n % 600), Some(10), Duration::from_secs(5)).await {
        Ok(r) => parse_reply(&r).is_ok(),
        Err(_) => false,
    }
}

async fn send_event(c: &KioskClient, sh: &Shared, n: u64) -> bool {
    sh.sent.fetch_add(1, Ordering::Relaxed);
    let id = format!("soak-{n}");
    let kind = if n.is_multiple_of(10) { "cart" } else { "view" };
    let sku = format!("sku{:05}", (n * 7919) % 2000);
    let res = c.event(&id, &format!("u{}", n % 600), &sku, kind, Some(Duration::from_secs(10))).await;
    let stored = matches!(&res, Ok(Some(r)) if r.json.get("stored").and_then(|s| s.as_bool()) == Some(true));
    let list = if stored { &sh.acked } else { &sh.unacked };
    if let Ok(mut l) = list.lock() {
        l.push(n);
    }
    stored
}

/// mosquitto on 127.0.0.1:`port` (anonymous, no persistence, TCP_NODELAY like the embedded
/// broker, else Nagle adds about 40 ms to every reply), ready once it accepts a connection.
fn start_mosquitto(dir: &Path, port: u16) -> Result<Daemon, DaemonError> {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nmax_queued_messages 100000\n"
        ),
    )?;
    let log = dir.join("mosquitto.log");
    let f = std::fs::File::create(&log)?;
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .map_err(|e| DaemonError::Unsupported(format!("cannot start mosquitto (is it on PATH?): {e}")))?;
    let mut b = Daemon { child, log };
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if b.exited().is_some() || t.elapsed() > Duration::from_secs(10) {
            return Err(DaemonError::Unsupported(format!("mosquitto did not start:\n{}", b.log_tail())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(b)
}

async fn drive(
    a: &SoakArgs,
    cfg: &Config,
    port: u16,
    daemon: &mut Daemon,
    broker_pid: Option<&str>,
    dir: &Path,
) -> Result<LoadResult, DaemonError> {
    let topics = Topics::from_config(cfg);
    let mut clients = Vec::new();
    for i in 0..a.kiosks.max(1) {
        let c = KioskClient::connect(
            "127.0.0.1",
            port,
            topics.clone(),
            &format!("soak{i}"),
            Protocol::V5,
            None,
            Duration::from_secs(5),
        )
        .await?;
        clients.push(Arc::new(c));
    }
    let sh = Arc::new(Shared {
        acc: Mutex::new(WindowAcc::default()),
        acked: Mutex::new(Vec::new()),
        unacked: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        seq: AtomicU64::new(0),
        inflight: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let total = Duration::from_secs_f64((a.minutes * 60.0).max(1.0));
    let window = Duration::from_secs(a.window_s.max(1)).min(total);
    // Progress on stderr, one row per window as it ends; the report repeats the table.
    eprintln!(
        "bench soak: daemon pid {}, {}",
        daemon.pid(),
        setup_line(a.broker, clients.len(), a.rate, a.events_rate, window.as_secs(), a.warmup_s, a.round_interval_s)
    );
    eprint!("{}", column_header(a.broker));
    let t0 = Instant::now();
    spawn_drivers(&clients, &sh, a.rate, false);
    spawn_drivers(&clients, &sh, a.events_rate, true);
    let mut windows = Vec::new();
    let mut end = t0;
    while end.duration_since(t0) < total {
        end += window;
        tokio::time::sleep_until(end.into()).await;
        if let Some(st) = daemon.exited() {
            sh.stop.store(true, Ordering::Relaxed);
            return Err(DaemonError::Unsupported(format!(
                "daemon exited during the soak ({st}):\n{}",
                daemon.log_tail()
            )));
        }
        let acc = sh.acc.lock().map(|mut a| std::mem::take(&mut *a)).unwrap_or_default();
        let (r, e) = (acc.req.summary(), acc.ev.summary());
        let t_s = t0.elapsed().as_secs_f64();
        let w = SoakWindow {
            t_s,
            warmup: t_s < a.warmup_s as f64,
            requests: r.count,
            req_p50_ms: r.p50_ms,
            req_p99_ms: r.p99_ms,
            req_max_ms: r.max_ms,
            events: e.count,
            ev_p50_ms: e.p50_ms,
            ev_p99_ms: e.p99_ms,
            errors: acc.errors,
            daemon_rss_mib: proc_status_mib(&daemon.pid(), "VmRSS"),
            broker_rss_mib: broker_pid.map(|p| proc_status_mib(p, "VmRSS")),
            loadgen_rss_mib: rss_mib(),
            rounds: counter(&read_status(dir), "online.rounds"),
        };
        eprintln!("{}", window_line(&w));
        windows.push(w);
    }
    // Stop issuing; let calls in flight finish (bounded by their timeouts).
    sh.stop.store(true, Ordering::Relaxed);
    let t = Instant::now();
    while sh.inflight.load(Ordering::Relaxed) > 0 && t.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = sh.acc.lock().map(|mut a| std::mem::take(&mut *a)).unwrap_or_default();
    let peak_rss_mib = proc_status_mib(&daemon.pid(), "VmHWM");
    drop(clients);
    Ok(LoadResult {
        window_s: window.as_secs(),
        windows,
        acked: sh.acked.lock().map(|v| v.clone()).unwrap_or_default(),
        unacked: sh.unacked.lock().map(|v| v.clone()).unwrap_or_default(),
        sent: sh.sent.load(Ordering::Relaxed),
        late_errors: late.errors,
        peak_rss_mib,
    })
}

/// The run's settings as the table's first line says them.
fn setup_line(
    broker: SoakBroker,
    kiosks: usize,
    rate: f64,
    events_rate: f64,
    window_s: u64,
    warmup_s: u64,
    round_interval_s: u64,
) -> String {
    format!(
        "{broker:?} broker, {kiosks} kiosks, {rate} requests/s + {events_rate} events/s, {window_s} s windows, warm-up {warmup_s} s, rounds every {round_interval_s} s"
    )
}

/// The column names of the window table (and, with mosquitto, where its RSS is).
fn column_header(broker: SoakBroker) -> String {
    let mut s = format!(
        "{:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6} {:>9} {:>8} {:>6}\n",
        "t_s",
        "requests",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "events",
        "ev_p50",
        "ev_p99",
        "errors",
        "daemon_MiB",
        "gen_MiB",
        "rounds"
    );
    if broker == SoakBroker::Mosquitto {
        s.push_str("(mosquitto's RSS is printed after the rounds column)\n");
    }
    s
}

/// One row of the window table (`w` marks a warm-up window).
fn window_line(w: &SoakWindow) -> String {
    format!(
        "{:>7.1} {:>8} {:>8.2} {:>8.2} {:>8.1} {:>7} {:>8.2} {:>8.2} {:>6} {:>9.1}{} {:>8.1} {:>6}{}",
        w.t_s,
        w.requests,
        w.req_p50_ms,
        w.req_p99_ms,
        w.req_max_ms,
        w.events,
        w.ev_p50_ms,
        w.ev_p99_ms,
        w.errors,
        w.daemon_rss_mib,
        if w.warmup { "w" } else { " " },
        w.loadgen_rss_mib,
        w.rounds,
        w.broker_rss_mib.map(|b| format!(" {b:>8.1}")).unwrap_or_default()
    )
}

/// The window table, then the events, RSS verdict, rounds and errors.
impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(
            f,
            "bench soak: {}",
            setup_line(r.broker, r.kiosks.max(1), r.rate, r.events_rate, r.window_s, r.warmup_s, r.round_interval_s)
        )?;
        write!(f, "{}", column_header(r.broker))?;
        for w in &r.windows {
            writeln!(f, "{}", window_line(w))?;
        }
        writeln!(
            f,
            "events: sent {}, acknowledged {}, stored {}, lost {} (unacknowledged {}, of them stored {})",
            r.events_sent, r.events_acked, r.events_stored, r.events_lost, r.events_unacked, r.events_unacked_stored
        )?;
        writeln!(
            f,
            "daemon RSS after warm-up: {:.1} -> {:.1} MiB ({:+.1} %, max {:.1} MiB, peak VmHWM {:.1} MiB): {} (target <= {RSS_TARGET_PCT} %)",
            r.rss_base_mib,
            r.rss_last_mib,
            r.rss_growth_pct,
            r.rss_max_mib,
            r.daemon_peak_rss_mib,
            if r.rss_pass { "PASS" } else { "FAIL" }
        )?;
        let d = &r.rounds.durations_s;
        let mean = if d.is_empty() { 0.0 } else { d.iter().sum::<f64>() / d.len() as f64 };
        writeln!(
            f,
            "rounds: {} run, {} promoted, {} rejected, {} failed; round wall s mean {:.1} max {:.1}",
            r.rounds.run,
            r.rounds.promoted,
            r.rounds.rejected,
            r.rounds.failed,
            mean,
            d.iter().copied().fold(0.0, f64::max)
        )?;
        writeln!(
            f,
            "errors: {}; daemon log: {} warnings, {} errors; clean exit: {}",
            r.errors, r.daemon_log_warnings, r.daemon_log_errors, r.clean_exit
        )?;
        for l in &r.daemon_log_samples {
            writeln!(f, "  daemon log: {l}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(t_s: f64, warmup: bool, rss: f64) -> SoakWindow {
        SoakWindow {
            t_s,
            warmup,
            requests: 0,
            req_p50_ms: 0.0,
            req_p99_ms: 0.0,
            req_max_ms: 0.0,
            events: 0,
            ev_p50_ms: 0.0,
            ev_p99_ms: 0.0,
            errors: 0,
            daemon_rss_mib: rss,
            broker_rss_mib: None,
            loadgen_rss_mib: 0.0,
            rounds: 0,
        }
    }

    #[test]
    fn rss_verdict_ignores_warmup_and_applies_the_target() {
        // Warm-up growth (50 -> 100) does not count; 100 -> 109 is +9 %, a spike in between is the max.
        let flat = [w(10.0, true, 50.0), w(20.0, false, 100.0), w(30.0, false, 130.0), w(40.0, false, 109.0)];
        let v = RssVerdict::of(&flat);
        assert_eq!((v.base_mib, v.last_mib, v.max_mib), (100.0, 109.0, 130.0));
        assert!((v.growth_pct - 9.0).abs() < 1e-9 && v.pass, "{v:?}");

        let growing = [w(10.0, true, 50.0), w(20.0, false, 100.0), w(30.0, false, 111.0)];
        let v = RssVerdict::of(&growing);
        assert!((v.growth_pct - 11.0).abs() < 1e-9 && !v.pass, "{v:?}");

        // Nothing past warm-up: no verdict, so no pass.
        assert!(!RssVerdict::of(&[w(10.0, true, 50.0)]).pass);
        assert!(!RssVerdict::of(&[]).pass);
    }

    #[test]
    fn proc_status_fields_parse() {
        // This process has a resident set and a peak at least as large.
        let rss = proc_status_mib("self", "VmRSS");
        assert!(rss > 0.5, "{rss}");
        assert!(proc_status_mib("self", "VmHWM") >= rss * 0.99);
        assert_eq!(proc_status_mib("self", "NoSuchField"), 0.0);
        assert_eq!(proc_status_mib("0", "VmRSS"), 0.0);
    }
}
