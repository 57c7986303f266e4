//! The on-device learning loop: fine-tune rounds on the store's interactions, the promotion gate,
//! and a ranker that serves a trained model (cold start through item features).
//!
//! - [`round`]: one fine-tune round (split, warm start, SGBD training under budgets, gate, registry);
//! - [`ranker`]: [`OnlineRanker`], serving a registry version from memory;
//! - [`features`]: item content vectors and the feature -> embedding projection for new items;
//! - [`item_graph`]: new items scored through FREEDOM's own item-item graph;
//! - [`publish`]: pushes to kiosks, fleet model announcements, `cmd/model-pin`;
//! - [`spawn_trainer`]: the daemon's learning thread (see its doc).

pub mod features;
pub mod item_graph;
pub mod publish;
pub mod ranker;
pub mod round;

pub use publish::{NoPublisher, Publisher};
pub use ranker::{Filter, OnlineRanker};
pub use round::{Decision, FailPoint, RoundHooks, RoundOutcome};

use crate::config::Config;
use crate::mqtt::contract::ModelAnnouncement;
use crate::registry::{Registry, RegistryError};
use crate::serve::{Ranker, RankerSlot, RequestCtx};
use crate::store::{ModelStatus, Store};
use crate::telemetry::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of the learning loop.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Learn(#[from] crate::learn::LearnError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("not enough data for a round: {0}")]
    NotEnoughData(String),
    #[error("round skipped, over the memory budget: {0}")]
    OverBudget(String),
    #[error("round aborted (shutdown)")]
    Aborted,
    #[error("injected failure at {0:?}")]
    Injected(FailPoint),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, OnlineError>;

/// Loads the registry's active version as a ranker. `Ok(None)` when there is none; an error when
/// it fails its checksums or cannot be read (the caller serves popularity and logs it).
pub fn load_active(cfg: &Config, store: &Store) -> Result<Option<(OnlineRanker, Arc<crate::registry::ServingModel>)>> {
    let Some(row) = store.active_model()? else {
        return Ok(None);
    };
    let (_, sm) = Registry::from_config(cfg).load_serving(&row)?;
    let r = OnlineRanker::build(&row.version, &sm, store, cfg)?;
    Ok(Some((r, Arc::new(sm))))
}

/// A training thread pool at `online.nice`, so serving threads win the CPU while a round runs.
pub(crate) fn training_pool(cfg: &Config) -> Option<rayon::ThreadPool> {
    let nice = cfg.online.nice;
    let mut b =
        rayon::ThreadPoolBuilder::new().thread_name(|i| format!("train-{i}")).start_handler(move |_| set_nice(nice));
    if cfg.online.train_threads > 0 {
        b = b.num_threads(cfg.online.train_threads);
    }
    match b.build() {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "training pool not built; training on the global pool");
            None
        }
    }
}

/// Lowers the calling thread's priority (a failure is logged and otherwise ignored).
fn set_nice(nice: i32) {
    if nice > 0 {
        if let Err(e) = crate::sys::set_thread_nice(nice) {
            tracing::debug!(nice, error = %e, "setpriority failed");
        }
    }
}

/// What the learning thread serves right now.
struct Served {
    version: Option<String>,
    serving: Option<Arc<crate::registry::ServingModel>>,
    features_seen: u64,
}

fn swap_in(slot: &RankerSlot, r: OnlineRanker, metrics: &Metrics) {
    tracing::info!(version = %r.model_version(), items = r.n_items(), graph = r.n_graph(), projected = r.n_projected(), "serving model swapped in");
    metrics.incr("online.swaps");
    slot.swap(Arc::new(r));
}

/// Starts the learning thread and, before returning, swaps the registry's active model into
/// `slot` and republishes the birth naming it ([`Publisher::model_changed`]), falling back to the
/// slot's current ranker, popularity, with a log line when there is none or it fails its
/// checksums. The thread, every `online.poll_s`:
/// 1. follows the registry: when the active version in the store differs from the one served
///    (`models activate|rollback|pin-version`, `cmd/model-pin`), loads it, swaps it in and
///    republishes the birth;
/// 2. when item features changed, rebuilds the ranker so new items are scored through the
///    model's item graph (FREEDOM, [`item_graph`]) or the projection (other models);
/// 3. when `online.enabled`, at least `online.min_new_events` new interactions arrived and
///    `online.min_interval_s` passed, runs a round ([`round::run`]) on a niced thread pool; on
///    promotion swaps the new model in, pushes refreshed suggestions to kiosks active in the last
///    `online.push_window_s`, announces the model to the fleet and republishes the birth.
///
/// It stops (between epochs of a round, too) once `stopping` is set.
pub fn spawn_trainer(
    cfg: Config,
    slot: Arc<RankerSlot>,
    fallback: Arc<dyn Ranker>,
    publisher: Arc<dyn Publisher>,
    metrics: Arc<Metrics>,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let store = match crate::store::open_config(&cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "learning loop not started: store unavailable");
            return std::thread::Builder::new().name("trainer".into()).spawn(|| {});
        }
    };
    let mut served =
        Served { version: None, serving: None, features_seen: store.counts().map(|c| c.item_features).unwrap_or(0) };
    match load_active(&cfg, &store) {
        Ok(Some((r, sm))) => {
            let version = r.model_version();
            served.version = Some(version.clone());
            served.serving = Some(sm);
            swap_in(&slot, r, &metrics);
            // The birth published at connect named the ranker of that moment (popularity).
            publisher.model_changed(&version);
        }
        Ok(None) => tracing::info!("no active model in the registry; serving store popularity"),
        Err(e) => {
            metrics.incr("online.load_failed");
            tracing::error!(error = %e, "active model not loaded (checksum or files); serving store popularity");
        }
    }
    std::thread::Builder::new().name("trainer".into()).spawn(move || {
        let pinned = Registry::from_config(&cfg).pinned().ok().flatten();
        let mut t = Trainer {
            cfg,
            store,
            slot,
            fallback,
            publisher,
            metrics,
            stopping,
            served,
            pinned,
            last_round: None,
            pool: None,
        };
        t.pool = training_pool(&t.cfg);
        t.run();
    })
}

struct Trainer {
    cfg: Config,
    store: Store,
    slot: Arc<RankerSlot>,
    fallback: Arc<dyn Ranker>,
    publisher: Arc<dyn Publisher>,
    metrics: Arc<Metrics>,
    stopping: Arc<AtomicBool>,
    served: Served,
    /// The registry's pin as last seen (announced when it changes).
    pinned: Option<String>,
    /// When the last round ended, and how many interactions it used.
    last_round: Option<(Instant, u64)>,
    pool: Option<rayon::ThreadPool>,
}

impl Trainer {
    fn run(&mut self) {
        let poll = Duration::from_secs(self.cfg.online.poll_s.max(1));
        // A restarted daemon counts new events from what the active model was trained on.
        let trained_on =
            self.store.active_model().ok().flatten().and_then(|r| r.metrics.get("events").and_then(|v| v.as_u64()));
        if let Some(n) = trained_on {
            self.last_round = Some((Instant::now() - Duration::from_secs(self.cfg.online.min_interval_s), n));
        }
        let mut last = Instant::now() - poll;
        while !self.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() < poll {
                continue;
            }
            last = Instant::now();
            self.follow_registry();
            self.follow_pin();
            self.refresh_features();
            if self.cfg.online.enabled && self.due() {
                self.round();
            }
        }
        tracing::debug!("learning loop stopped");
    }

    fn follow_registry(&mut self) {
        let active = match self.store.active_model() {
            Ok(a) => a,
            Err(e) => return tracing::warn!(error = %e, "registry check failed"),
        };
        let want = active.as_ref().map(|r| r.version.clone());
        if want == self.served.version {
            return;
        }
        match &want {
            None => {
                tracing::info!("no active model any more; serving store popularity");
                self.slot.swap(self.fallback.clone());
                self.served = Served { version: None, serving: None, features_seen: self.served.features_seen };
                self.publisher.model_changed(&self.fallback.model_version());
            }
            Some(v) => match load_active(&self.cfg, &self.store) {
                Ok(Some((r, sm))) => {
                    self.served.version = Some(v.clone());
                    self.served.serving = Some(sm);
                    swap_in(&self.slot, r, &self.metrics);
                    self.publisher.model_changed(v);
                    let row = active.as_ref();
                    self.publisher.announce(&self.announcement(
                        "activated",
                        v,
                        row.and_then(|r| r.parent.clone()),
                        row.map(|r| r.metrics.clone()),
                    ));
                }
                Ok(None) => {}
                Err(e) => {
                    // Keep serving what we serve; do not retry this version every poll.
                    self.metrics.incr("online.load_failed");
                    tracing::error!(version = %v, error = %e, "activated model not loaded; keeping the current one");
                    self.served.version = Some(v.clone());
                    // The birth's registry entry changed even though the served model did not.
                    self.publisher.model_changed(&self.slot.get().model_version());
                }
            },
        }
    }

    /// Announces a pin set or lifted since the last poll (`cmd/model-pin`, `models pin-version`,
    /// `models unpin`): `pinned` with the pinned version, `unpinned` with the version whose pin
    /// was lifted, each with that version's registry metrics.
    fn follow_pin(&mut self) {
        let pinned = match Registry::from_config(&self.cfg).pinned() {
            Ok(p) => p,
            Err(e) => return tracing::warn!(error = %e, "registry pin not read"),
        };
        if pinned == self.pinned {
            return;
        }
        let (event, version) = match (&pinned, &self.pinned) {
            (Some(v), _) => ("pinned", v.clone()),
            (None, Some(old)) => ("unpinned", old.clone()),
            (None, None) => return,
        };
        self.pinned = pinned;
        let row = self.store.model_version(&version).ok().flatten();
        tracing::info!(event, version = %version, "model pin changed");
        self.publisher.announce(&self.announcement(
            event,
            &version,
            row.as_ref().and_then(|r| r.parent.clone()),
            row.map(|r| r.metrics),
        ));
    }

    fn refresh_features(&mut self) {
        let n = match self.store.counts() {
            Ok(c) => c.item_features,
            Err(_) => return,
        };
        if n == self.served.features_seen {
            return;
        }
        self.served.features_seen = n;
        let (Some(v), Some(sm)) = (self.served.version.clone(), self.served.serving.clone()) else {
            return;
        };
        if self.slot.get().model_version() != v {
            return;
        }
        match OnlineRanker::build(&v, &sm, &self.store, &self.cfg) {
            Ok(r) => swap_in(&self.slot, r, &self.metrics),
            Err(e) => tracing::warn!(error = %e, "ranker not rebuilt after a feature change"),
        }
    }

    fn due(&self) -> bool {
        let n = match self.store.counts() {
            Ok(c) => c.interactions,
            Err(_) => return false,
        };
        match self.last_round {
            None => n >= self.cfg.online.min_new_events,
            Some((t, used)) => {
                n.saturating_sub(used) >= self.cfg.online.min_new_events
                    && t.elapsed() >= Duration::from_secs(self.cfg.online.min_interval_s)
            }
        }
    }

    fn announcement(
        &self,
        event: &str,
        version: &str,
        parent: Option<String>,
        metrics: Option<serde_json::Value>,
    ) -> ModelAnnouncement {
        ModelAnnouncement {
            schema_version: crate::mqtt::contract::SCHEMA_VERSION.into(),
            ts: crate::sys::now_ms(),
            node_id: self.cfg.node.node_id.clone(),
            store_id: self.cfg.node.store_id.clone(),
            event: event.into(),
            version: version.into(),
            parent,
            metrics: metrics.unwrap_or_default(),
        }
    }

    fn round(&mut self) {
        let reg = Registry::from_config(&self.cfg);
        let t0 = Instant::now();
        tracing::info!(optim = %self.cfg.online.optim.with_variant(self.cfg.learn.variant).label(), "fine-tune round started");
        let (cfg, stop) = (&self.cfg, &*self.stopping);
        let hooks = RoundHooks::default();
        // The round opens its own connection (a `Store` is not shared across threads).
        let work = || {
            crate::store::open_config(cfg)
                .map_err(OnlineError::from)
                .and_then(|s| round::run(cfg, &s, &reg, stop, &hooks))
        };
        let res = match &self.pool {
            Some(p) => p.install(work),
            None => work(),
        };
        let used = self.store.counts().map(|c| c.interactions).unwrap_or(0);
        self.metrics.incr("online.rounds");
        self.metrics.observe_ms("online.round_ms", t0.elapsed().as_secs_f64() * 1e3);
        if let Some(rss) = crate::sys::peak_rss_bytes() {
            self.metrics.set("online.peak_rss_mb", rss >> 20);
        }
        let out = match res {
            Ok(o) => o,
            Err(OnlineError::Aborted) => return,
            Err(e) => {
                self.metrics.incr("online.round_failed");
                tracing::warn!(error = %e, "fine-tune round did not produce a candidate");
                self.last_round = Some((Instant::now(), used));
                return;
            }
        };
        self.last_round = Some((Instant::now(), out.events_used));
        let event = match out.decision {
            Decision::Promoted => "promoted",
            Decision::Rejected => "rejected",
            // Passed the gate, but a pin holds (`pinned` announces a pin being set).
            Decision::Pinned => "held",
        };
        self.metrics.incr(&format!("online.{event}"));
        self.publisher.announce(&self.announcement(event, &out.version, out.parent.clone(), Some(out.metrics.clone())));
        if out.decision != Decision::Promoted {
            return;
        }
        let sm = Arc::new(out.serving);
        let r = match OnlineRanker::build(&out.version, &sm, &self.store, &self.cfg) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(version = %out.version, error = %e, "promoted model not loaded; rolling back");
                let _ = self.store.set_model_status(&out.version, ModelStatus::Rejected);
                if let Some(p) = &out.parent {
                    let _ = self.store.set_model_status(p, ModelStatus::Active);
                }
                return;
            }
        };
        self.served.version = Some(out.version.clone());
        self.served.serving = Some(sm);
        swap_in(&self.slot, r, &self.metrics);
        self.publisher.model_changed(&out.version);
        self.push_recent(&out.version);
    }

    /// Refreshed suggestions for kiosks with an event in the last `online.push_window_s`.
    fn push_recent(&self, version: &str) {
        let since = crate::sys::now_ms() - (self.cfg.online.push_window_s as i64) * 1000;
        let events = match self.store.interactions() {
            Ok(e) => e,
            Err(_) => return,
        };
        let mut latest: std::collections::HashMap<String, (i64, String)> = std::collections::HashMap::new();
        for e in events.iter().filter(|e| e.ts_ms >= since) {
            if let Some(k) = &e.kiosk {
                let slot = latest.entry(k.clone()).or_insert((e.ts_ms, e.user.clone()));
                if e.ts_ms >= slot.0 {
                    *slot = (e.ts_ms, e.user.clone());
                }
            }
        }
        let ranker = self.slot.get();
        let k = self.cfg.serve.default_k;
        for (kiosk, (_, user)) in latest {
            let ctx = RequestCtx { kiosk: Some(kiosk.clone()), exclude: vec![], now_ms: crate::sys::now_ms() };
            let rec = ranker.recommend(&user, k, &ctx);
            self.publisher.push(&kiosk, &user, &rec);
            self.metrics.incr("online.pushes");
        }
        tracing::info!(version, "refreshed suggestions pushed to recently active kiosks");
    }
}
