//! The running appliance: tokio stages with bounded channels, systemd notify and watchdog,
//! signals, clean shutdown.
//!
//! Stages (each beats its heartbeat at least once a second, see [`health`]):
//! - `mqtt`: the client's poll task ([`crate::mqtt::Link`]), reconnecting with backoff;
//! - `router`: classifies incoming messages by topic and hands them to a stage (bounded channels;
//!   when a stage's queue is full the router waits, which pushes back on the broker connection);
//! - `ingest`: a dedicated thread that batches events into one SQLite transaction per batch (the
//!   durable-ingest path), acknowledges after commit, feeds the ranker and forwards new events to
//!   the fleet through the outbox; it also applies catalogue updates (the store's single writer);
//! - `requests`: answers recommendation requests from memory ([`crate::serve`]);
//! - `commands`: fleet commands (rebirth, config-reload, catalog-update, model-pin), each
//!   answered on `<base>/cmd/<name>/result`;
//! - a stats publisher, a popularity refresher thread, and the status task (status.json,
//!   `STATUS=`, watchdog);
//! - with cameras configured, the shelf stages `capture` and `denoise` ([`shelf`]).
//!
//! Shutdown (SIGTERM/SIGINT or [`ShutdownHandle::trigger`]): stop taking messages, drain the
//! ingest queue and commit it, publish `stopped` (retained, QoS 1, waiting for its PUBACK),
//! disconnect cleanly (the broker drops the Last Will), exit 0.

pub mod health;
pub mod publish;
pub mod shelf;
mod stages;

use crate::config::{BrokerMode, Config};
use crate::mqtt::contract::{Birth, ModelInfo, Topics, STATUS_STOPPED};
use crate::mqtt::{Link, LinkOptions};
use crate::serve::{PopularityRanker, Ranker, RankerSlot};
use crate::store::EventKind;
use crate::telemetry::Metrics;
use health::{Health, Heartbeats, Notifier};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    #[error("{0}")]
    Unsupported(String),
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// The config file, for `cmd/config-reload`; without it reload only re-validates defaults.
    pub config_path: Option<PathBuf>,
    /// Start the simulated kiosk too ([`crate::demo`]).
    pub demo: bool,
    /// Catalogue the demo imports into an empty store (Myntra `styles.csv` layout).
    pub demo_catalog: Option<PathBuf>,
}

/// Triggers a clean shutdown of [`run`] from elsewhere (tests, signal handlers).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn new() -> (ShutdownHandle, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (ShutdownHandle(Arc::new(tx)), rx)
    }
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// Settings that `cmd/config-reload` can change without a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    pub default_k: usize,
    pub max_k: usize,
    pub reply_cache_s: u64,
    pub max_payload_bytes: usize,
    pub stats_interval_s: u64,
    pub forward_events: bool,
    pub push_kinds: Vec<EventKind>,
}

impl LiveSettings {
    fn from(cfg: &Config) -> Self {
        Self {
            default_k: cfg.serve.default_k,
            max_k: cfg.serve.max_k,
            reply_cache_s: cfg.serve.reply_cache_s,
            max_payload_bytes: cfg.mqtt.max_payload_bytes,
            stats_interval_s: cfg.mqtt.stats_interval_s,
            forward_events: cfg.mqtt.forward_events,
            push_kinds: cfg.serve.push_kinds.clone(),
        }
    }
}

/// Everything the stages share.
pub(crate) struct Ctx {
    pub cfg: RwLock<Config>,
    pub live: RwLock<LiveSettings>,
    pub topics: Topics,
    pub link: Link,
    pub ranker: Arc<RankerSlot>,
    pub popularity: Arc<PopularityRanker>,
    pub health: Health,
    pub started: Instant,
    pub started_ms: i64,
    pub opts: DaemonOptions,
    /// Set after a catalogue change or new events: the refresher re-reads popularity.
    pub dirty: AtomicBool,
    /// Cameras and denoiser, when cameras are configured ([`shelf`]).
    pub shelf: Option<shelf::ShelfHandle>,
}

impl Ctx {
    pub fn live(&self) -> LiveSettings {
        self.live.read().map(|l| l.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
    pub fn metrics(&self) -> &Metrics {
        &self.health.metrics
    }
}

/// The retained birth document for this node: the served model and the registry's active
/// version (read from the store).
pub fn birth(cfg: &Config, model_version: &str) -> Birth {
    let mut models = vec![ModelInfo { name: "recommender".into(), version: model_version.into(), sha256: None }];
    if let Ok(Some(active)) = crate::store::open_config(cfg).and_then(|s| s.active_model()) {
        models.push(ModelInfo { name: "registry-active".into(), version: active.version, sha256: Some(active.sha256) });
    }
    Birth::new(&cfg.node.node_id, &cfg.node.store_id, &cfg.hash(), models)
}

/// Builds a runtime, installs SIGTERM/SIGINT handlers and runs the daemon until a signal.
pub fn run_blocking(cfg: Config, opts: DaemonOptions) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("sgbd-rt").build()?;
    rt.block_on(async move {
        let (handle, rx) = ShutdownHandle::new();
        let h = handle.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "stopping"),
            }
            h.trigger();
        });
        run(cfg, opts, rx).await
    })
}

/// A read-only data directory is a clear start-up error (SQLite would only say "unable to open
/// database file"). A full one is not: the space reserve is released for the database, and the
/// daemon starts, serves from memory and refuses events until space frees.
fn check_writable(dir: &std::path::Path, space: &crate::store::space::SpaceGuard) -> Result<(), DaemonError> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let try_write = || std::fs::write(&probe, b"probe").and_then(|_| std::fs::remove_file(&probe));
    let full = |e: &std::io::Error| e.raw_os_error() == Some(28);
    match try_write() {
        Ok(()) => Ok(()),
        Err(e) if full(&e) => {
            let _ = std::fs::remove_file(&probe);
            if space.release_reserve() && try_write().is_ok() {
                return Ok(());
            }
            tracing::error!(dir = %dir.display(), "data directory full: starting anyway, serving from memory; events are refused until space frees");
            Ok(())
        }
        Err(e) => Err(DaemonError::Unsupported(format!("data directory {} is not writable: {e}", dir.display()))),
    }
}

/// Runs the daemon on the current tokio runtime until `shutdown` turns true.
pub async fn run(cfg: Config, opts: DaemonOptions, mut shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    let metrics = Arc::new(Metrics::default());
    let db = crate::store::db_path(&cfg);
    tracing::info!(db = %db.display(), node = %cfg.node.node_id, store = %cfg.node.store_id, "starting");
    if let Some(parent) = db.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::create_dir_all(&cfg.node.data_dir)?;
    let space = crate::store::space::SpaceGuard::from_config(&cfg);
    for dir in [Some(cfg.node.data_dir.as_path()), db.parent()].into_iter().flatten() {
        check_writable(dir, &space)?;
    }

    // Database first (READY=1 only once it is open and migrated), then the ranker from it.
    let (writer_store, outbox_store, refresh_store, popularity) = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || -> Result<_, DaemonError> {
            let open = || crate::store::open_config(&cfg);
            let w = open()?;
            let pop = PopularityRanker::load(&w, &cfg.serve.exclude_kinds)?;
            Ok((w, open()?, open()?, pop))
        })
        .await
        .map_err(|e| DaemonError::Unsupported(format!("startup task failed: {e}")))??
    };
    space.refill_reserve();
    let popularity = Arc::new(popularity);
    tracing::info!(items = popularity.len(), "popularity ranker loaded");
    let ranker = Arc::new(RankerSlot::new(popularity.clone() as Arc<dyn Ranker>));

    // Broker.
    let credentials = crate::mqtt::credentials(&cfg.mqtt)?;
    let mut link_opts = LinkOptions::from_config(&cfg, &cfg.mqtt.host, cfg.mqtt.port, credentials);
    link_opts.tls = crate::mqtt::tls::from_config(&cfg.mqtt)?;
    if cfg.mqtt.broker == BrokerMode::Embedded {
        crate::mqtt::broker::start_embedded(&cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.max_payload_bytes)?;
    }
    let topics = Topics::from_config(&cfg);
    let birth_bytes = serde_json::to_vec(&birth(&cfg, &ranker.get().model_version())).unwrap_or_default();
    let (link, incoming) =
        Link::start(link_opts, topics.subscriptions(), birth_bytes.into(), Some(outbox_store), metrics.clone(), 4096)?;

    let shelf_parts = shelf::Shelf::prepare(&cfg, metrics.clone());
    let ctx = Arc::new(Ctx {
        live: RwLock::new(LiveSettings::from(&cfg)),
        cfg: RwLock::new(cfg.clone()),
        topics,
        link: link.clone(),
        ranker,
        popularity,
        health: Health { metrics: metrics.clone(), beats: Heartbeats::with_stages(shelf::stages(&cfg)) },
        started: Instant::now(),
        started_ms: crate::sys::now_ms(),
        opts: opts.clone(),
        dirty: AtomicBool::new(false),
        shelf: shelf_parts.as_ref().map(|s| s.handle()),
    });

    // Wait for the broker (shutdown-aware) before READY=1.
    let notifier = Notifier::from_env();
    notifier.status("connecting to the broker");
    let waiting = Instant::now();
    loop {
        if link.is_connected() {
            break;
        }
        if cfg.mqtt.broker == BrokerMode::Embedded && waiting.elapsed() > Duration::from_secs(10) {
            return Err(DaemonError::Unsupported("cannot connect to the embedded broker".into()));
        }
        if waiting.elapsed().as_secs() % 10 == 9 {
            notifier.status(&format!("waiting for the broker {}:{}", cfg.mqtt.host, cfg.mqtt.port));
        }
        if *shutdown.borrow() {
            link.shutdown(STATUS_STOPPED, Duration::from_millis(100)).await;
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = shutdown.changed() => {}
        }
    }

    let stopping = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Handle::current();
    let (ev_tx, ev_rx) = tokio::sync::mpsc::channel(8192);
    let (req_tx, req_rx) = tokio::sync::mpsc::channel(2048);
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(64);
    let writer = {
        let ctx = ctx.clone();
        let rt = rt.clone();
        std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || stages::ingest::ingest_loop(ctx, writer_store, ev_rx, rt))?
    };
    let refresher = {
        let ctx = ctx.clone();
        let stopping = stopping.clone();
        std::thread::Builder::new()
            .name("ranker-refresh".into())
            .spawn(move || stages::refresh::refresh_loop(ctx, refresh_store, stopping))?
    };
    let publisher = publish::publisher(&cfg, &link);
    let trainer = crate::online::spawn_trainer(
        cfg.clone(),
        ctx.ranker.clone(),
        ctx.popularity.clone(),
        publisher,
        metrics.clone(),
        stopping.clone(),
    )?;
    let router =
        tokio::spawn(stages::router::router(ctx.clone(), incoming, ev_tx.clone(), req_tx, cmd_tx, shutdown.clone()));
    let requests = tokio::spawn(stages::requests::request_loop(ctx.clone(), req_rx));
    let commands = tokio::spawn(stages::commands::command_loop(ctx.clone(), cmd_rx, ev_tx));
    let shelf_stage = shelf_parts.map(|s| s.start(ctx.clone())).transpose()?;
    let stats = tokio::spawn(stages::stats::stats_loop(ctx.clone(), shutdown.clone()));
    let status = tokio::spawn(stages::status::status_loop(ctx.clone(), notifier, shutdown.clone()));
    let demo = opts.demo.then(|| {
        let kiosk = crate::demo::kiosk::DemoKiosk {
            cfg: ctx.cfg.read().map(|c| c.clone()).unwrap_or_default(),
            topics: ctx.topics.clone(),
            catalog: opts.demo_catalog.clone().unwrap_or_else(|| PathBuf::from(crate::demo::DEMO_CATALOG)),
        };
        let c = ctx.clone();
        tokio::spawn(crate::demo::kiosk::run(kiosk, move || c.dirty.store(true, Ordering::Relaxed), shutdown.clone()))
    });

    Notifier::from_env().ready();
    tracing::info!(model = %ctx.ranker.get().model_version(), "ready");

    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }

    // Drain: the router stops on the signal and drops its senders; the request and command stages
    // end when their queues are empty; the ingest thread commits what it holds and ends.
    let notifier = Notifier::from_env();
    notifier.stopping();
    tracing::info!("draining");
    if let Some(d) = demo {
        let _ = tokio::time::timeout(Duration::from_secs(3), d).await;
    }
    if let Some(s) = shelf_stage {
        let _ = tokio::task::spawn_blocking(move || s.stop()).await;
    }
    let _ = router.await;
    let _ = requests.await;
    let _ = commands.await;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    stopping.store(true, Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || refresher.join()).await;
    let _ = tokio::task::spawn_blocking(move || trainer.join()).await;
    stats.abort();
    let _ = status.await;
    let acked = link.shutdown(STATUS_STOPPED, Duration::from_secs(3)).await;
    stages::status::write_status_file(&ctx, false);
    tracing::info!(stopped_acked = acked, "stopped");
    Ok(())
}
