//! `bench loop`: replays a timestamped `.inter` file (H&M: `hm_sample/hm.inter`) in time order
//! through the learning loop's library pieces, in process, once per arm (`sgbd`, `adam`: fine-tune
//! rounds with that optimiser and the real promotion gate; `popularity`: no training).
//!
//! The first `--warmup` fraction of the events is ingested and (for trained arms) a first round
//! runs; the rest is cut into `--rounds` chunks. Within a chunk events stream one by one: at a
//! user's first event in the chunk the current ranker serves `k` items (after seeing that event, as
//! a kiosk scan would); the user counts as a **hit** if a later event of the chunk buys one of them
//! (online hit rate = hits / users with a later event in the chunk). After each chunk a round runs
//! while a serving thread calls `recommend` in a loop: request latency while training (in-process
//! ranking time, the part of a reply the model controls), round wall time, peak RSS.
//!
//! Items enter the catalogue (with their feature vectors) when the chunk that first sells them
//! opens; items first sold in the warm-up, and feature rows never sold, from the start. At each
//! chunk's start one poll rebuilds the rankers, as the daemon's learning thread does when
//! features change; per serving path (FREEDOM's item graph, and for comparison on the same stream
//! the same version with the feature projection; popularity) the report gives how long the
//! rebuild took, how many new items were recommended within their chunk, the replay minutes from
//! insert to first recommendation, and how many users bought a new item recommended to them.

use crate::config::Config;
use crate::online::{round, OnlineError, Result, RoundHooks};
use crate::registry::Registry;
use crate::serve::{PopularityRanker, Ranker, RequestCtx};
use crate::store::{Event, EventKind, FeatureKind, Store};
use crate::telemetry::Metrics;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct LoopBenchArgs {
    /// A timestamped `.inter` file (`userID itemID timestamp ...`) or a folder holding one.
    #[arg(long, env = "SGBD_DATA")]
    pub data: PathBuf,
    /// Arms to compare: sgbd, adam, mg, sam, popularity.
    #[arg(long, default_value = "sgbd,adam,popularity", value_delimiter = ',')]
    pub arms: Vec<String>,
    /// Fraction of the events ingested before the stream starts.
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// Chunks the rest is cut into (one fine-tune round after each).
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Items served per recommendation.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Epoch cap per round (overrides `online.epochs`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Configuration file for `[learn]` / `[online]` (default: compiled-in defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Item feature files (.npy, row i = itemID i), comma separated, stored as the items' features
    /// before the replay (a file name containing "image" is an image modality, any other text; the
    /// encoder id is the file stem). With them, `online.model = "auto"` trains FREEDOM.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<PathBuf>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One item feature file for the store: modality, encoder id, dimension, rows (itemID order).
pub struct FeatureFile {
    pub kind: FeatureKind,
    pub encoder: String,
    pub dim: usize,
    pub rows: Vec<f32>,
}

impl FeatureFile {
    pub fn load(path: &Path) -> Result<Self> {
        let (_, dim, rows) = crate::learn::npy::read_features(path)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let kind = if stem.contains("image") { FeatureKind::Image } else { FeatureKind::Text };
        Ok(Self { kind, encoder: stem, dim, rows })
    }
}

/// Catalogues `skus` (as the replay names them: SKU `i` is row `i` of every feature file) and
/// stores their feature vectors, as a merchant adding items would.
fn catalogue(store: &Store, skus: &[&str], features: &[FeatureFile]) -> Result<()> {
    for &sku in skus {
        if store.item_by_sku(sku)?.is_none() {
            store.upsert_item(&crate::store::NewItem {
                sku: sku.to_string(),
                title: format!("item {sku}"),
                description: String::new(),
                attributes: serde_json::Value::Null,
                image_path: None,
            })?;
        }
        let Ok(row) = sku.parse::<usize>() else { continue };
        for f in features {
            if let Some(v) = f.rows.get(row * f.dim..(row + 1) * f.dim) {
                store.set_item_feature(sku, f.kind, &f.encoder, v)?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundStat {
    pub after_chunk: usize,
    pub decision: String,
    /// The model the round trained (`online.model` resolved on the store's features).
    pub model: String,
    pub wall_s: f64,
    pub train_s: f64,
    pub epochs: usize,
    pub valid_recall20: f64,
    pub baseline_recall20: f64,
    pub peak_rss_mb: Option<u64>,
    /// In-process `recommend` latency while this round trained.
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    pub arm: String,
    /// Online hit rate per chunk.
    pub hit_rate: Vec<f64>,
    pub hits: u64,
    pub served_users: u64,
    pub rounds: Vec<RoundStat>,
    /// Latency of the serving path with no training running (p50, p99 ms).
    pub idle_p50_ms: f64,
    pub idle_p99_ms: f64,
    /// Items first sold after the warm-up, per serving path (the active model's first).
    pub new_items: Vec<NewItemStat>,
}

/// Items first sold after the warm-up: catalogued (with their features) when the chunk that first
/// sells them opens, then served by one poll's rebuild of the rankers.
#[derive(Debug, Clone, Serialize)]
pub struct NewItemStat {
    /// How the path scores items without interactions: `graph` (FREEDOM's item graph),
    /// `projection` (feature -> embedding regression) or `popularity`.
    pub path: String,
    pub catalogued: u64,
    /// Wall ms from the catalogue insert to a ranker serving the items (the poll's rebuild; the
    /// daemon adds up to `online.poll_s` of waiting), worst chunk.
    pub servable_ms_max: f64,
    /// New items recommended to someone within the chunk that catalogued them.
    pub recommended: u64,
    /// Replay minutes from the insert (the chunk's first event) to an item's first
    /// recommendation, median and p90 over the items recommended.
    pub minutes_p50: f64,
    pub minutes_p90: f64,
    /// Users who were recommended a new item at their first event of the chunk and bought it later.
    pub hits: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoopBenchReport {
    pub data: String,
    pub events: usize,
    pub warmup_events: usize,
    pub k: usize,
    pub model: String,
    pub arms: Vec<ArmResult>,
}

/// Reads `userID itemID timestamp` rows (header names them) into events in time order.
pub fn load_timed_inter(path: &Path) -> Result<Vec<Event>> {
    let text = std::fs::read_to_string(path).map_err(|e| OnlineError::Invalid(format!("{}: {e}", path.display())))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').map(str::trim).collect();
    let col = |n: &str| header.iter().position(|c| c.eq_ignore_ascii_case(n));
    let (Some(cu), Some(ci), Some(ct)) = (col("userID"), col("itemID"), col("timestamp")) else {
        return Err(OnlineError::Invalid(format!("{}: header must name userID, itemID and timestamp", path.display())));
    };
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() <= cu.max(ci).max(ct) {
            continue;
        }
        let ts: i64 = f[ct]
            .trim()
            .parse()
            .map_err(|_| OnlineError::Invalid(format!("{}: line {}: bad timestamp", path.display(), n + 2)))?;
        out.push(Event {
            event_id: format!("inter:{}", n + 2),
            user: format!("u{}", f[cu].trim()),
            sku: f[ci].trim().to_string(),
            kind: EventKind::Purchase,
            ts_ms: ts * 1000,
            kiosk: Some("replay".into()),
        });
    }
    out.sort_by_key(|e| e.ts_ms); // stable: file order within a timestamp
    Ok(out)
}

fn latency_probe(
    ranker: Arc<dyn Ranker>,
    users: Arc<Vec<String>>,
    k: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Metrics> {
    std::thread::spawn(move || {
        let m = Metrics::default();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let u = &users[i % users.len().max(1)];
            let t = Instant::now();
            let rec = ranker.recommend(u, k, &RequestCtx::default());
            m.observe_ms("ms", t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(rec);
            i = i.wrapping_add(7919);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        m
    })
}

fn p50_p99(m: &Metrics) -> (u64, f64, f64) {
    m.latency_summaries().get("ms").map_or((0, f64::NAN, f64::NAN), |s| (s.count, s.p50_ms, s.p99_ms))
}

/// A ranker serving the stream, named for how it scores items without interactions.
struct Served {
    name: &'static str,
    ranker: Arc<dyn Ranker>,
}

/// The rankers one poll would build: the active model (new items through its item graph when it
/// has one, else the projection) and, for a model with an item graph, the same version with the
/// projection instead (scored on the same stream for comparison; the replay does not depend on
/// what is served). Popularity when untrained or nothing is active.
fn serving_rankers(cfg: &Config, store: &Store, trained: bool) -> Result<Vec<Served>> {
    if trained {
        if let Some((r, sm)) = crate::online::load_active(cfg, store)? {
            let version = r.model_version();
            if sm.graph.is_none() {
                return Ok(vec![Served { name: "projection", ranker: Arc::new(r) }]);
            }
            let plain = crate::registry::ServingModel { graph: None, ..(*sm).clone() };
            let alt = crate::online::OnlineRanker::build(&version, &plain, store, cfg)?;
            return Ok(vec![
                Served { name: "graph", ranker: Arc::new(r) },
                Served { name: "projection", ranker: Arc::new(alt) },
            ]);
        }
    }
    let pop =
        PopularityRanker::load(store, &cfg.serve.exclude_kinds).map_err(|e| OnlineError::Invalid(e.to_string()))?;
    Ok(vec![Served { name: "popularity", ranker: Arc::new(pop) }])
}

/// New items seen by one serving path.
#[derive(Default)]
struct NewItemTrack {
    catalogued: u64,
    servable_ms_max: f64,
    /// Replay minutes from insert to first recommendation, per new item recommended.
    minutes: Vec<f64>,
    hits: u64,
}

impl NewItemTrack {
    fn stat(mut self, path: &str) -> NewItemStat {
        self.minutes.sort_by(f64::total_cmp);
        let q = |p: f64| match self.minutes.len() {
            0 => f64::NAN,
            n => self.minutes[((n - 1) as f64 * p).round() as usize],
        };
        NewItemStat {
            path: path.to_string(),
            catalogued: self.catalogued,
            servable_ms_max: self.servable_ms_max,
            recommended: self.minutes.len() as u64,
            minutes_p50: q(0.5),
            minutes_p90: q(0.9),
            hits: self.hits,
        }
    }
}

fn run_arm(
    arm: &str,
    base: &Config,
    events: &[Event],
    features: &[FeatureFile],
    warm: usize,
    rounds: usize,
    k: usize,
) -> Result<ArmResult> {
    let dir = std::env::temp_dir().join(format!("sgbd-bench-loop-{}-{arm}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = base.clone();
    cfg.node.data_dir = dir.clone();
    let trained = arm != "popularity";
    if trained {
        cfg.online.optim = serde_json::from_value(serde_json::Value::String(arm.into()))
            .map_err(|_| OnlineError::Invalid(format!("unknown arm {arm:?} (sgbd, adam, mg, sam, popularity)")))?;
    }
    // An item enters the catalogue when the chunk that first sells it opens (items first sold in
    // the warm-up, and feature rows never sold, from the start).
    let rest = &events[warm..];
    let per = rest.len().div_ceil(rounds.max(1)).max(1);
    let n_chunks = rest.len().div_ceil(per);
    // arrivals[c]: the SKUs catalogued when chunk c opens (0: from the start)
    let mut arrivals: Vec<Vec<&str>> = vec![vec![]; n_chunks + 1];
    let mut seen: std::collections::HashSet<&str> = Default::default();
    for (n, e) in events.iter().enumerate() {
        if seen.insert(e.sku.as_str()) {
            arrivals[if n < warm { 0 } else { 1 + (n - warm) / per }].push(e.sku.as_str());
        }
    }
    arrivals.iter_mut().for_each(|a| a.sort_unstable());
    let rows = features.iter().map(|f| f.rows.len() / f.dim.max(1)).max().unwrap_or(0);
    let row_skus: Vec<String> = (0..rows).map(|i| i.to_string()).filter(|s| !seen.contains(s.as_str())).collect();
    arrivals[0].extend(row_skus.iter().map(String::as_str));
    let mut store = crate::store::open_config(&cfg)?;
    catalogue(&store, &arrivals[0], features)?;
    store.insert_events(&events[..warm])?;
    let reg = Registry::from_config(&cfg);
    let users: Arc<Vec<String>> = {
        let mut u: Vec<String> = events[..warm].iter().map(|e| e.user.clone()).collect();
        u.sort();
        u.dedup();
        Arc::new(u)
    };
    let pool =
        crate::online::training_pool(&cfg).ok_or_else(|| OnlineError::Invalid("training pool not built".into()))?;
    let mut res = ArmResult {
        arm: arm.into(),
        hit_rate: vec![],
        hits: 0,
        served_users: 0,
        rounds: vec![],
        idle_p50_ms: 0.0,
        idle_p99_ms: 0.0,
        new_items: vec![],
    };
    let do_round = |ranker: &Arc<dyn Ranker>, after: usize| -> Result<RoundStat> {
        let stop = Arc::new(AtomicBool::new(false));
        let probe = latency_probe(ranker.clone(), users.clone(), k, stop.clone());
        let t = Instant::now();
        // The round opens its own connection (a `Store` stays on one thread).
        let out = pool.install(|| {
            crate::store::open_config(&cfg)
                .map_err(crate::online::OnlineError::from)
                .and_then(|s| round::run(&cfg, &s, &reg, &AtomicBool::new(false), &RoundHooks::default()))
        });
        let wall_s = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let m = probe.join().map_err(|_| OnlineError::Invalid("latency probe panicked".into()))?;
        let (requests, p50_ms, p99_ms) = p50_p99(&m);
        let peak = crate::sys::peak_rss_bytes().map(|b| b >> 20);
        Ok(match out {
            Ok(o) => RoundStat {
                after_chunk: after,
                decision: format!("{:?}", o.decision).to_lowercase(),
                model: o.metrics["model"].as_str().unwrap_or_default().to_string(),
                wall_s,
                train_s: o.train_s,
                epochs: o.epochs,
                valid_recall20: o.candidate.recall_at(20),
                baseline_recall20: o.baseline.recall_at(20),
                peak_rss_mb: peak,
                requests,
                p50_ms,
                p99_ms,
            },
            Err(e) => RoundStat {
                after_chunk: after,
                decision: format!("failed: {e}"),
                model: String::new(),
                wall_s,
                train_s: 0.0,
                epochs: 0,
                valid_recall20: f64::NAN,
                baseline_recall20: f64::NAN,
                peak_rss_mb: peak,
                requests,
                p50_ms,
                p99_ms,
            },
        })
    };
    let mut paths = serving_rankers(&cfg, &store, false)?;
    {
        // Idle latency (no training running).
        let stop = Arc::new(AtomicBool::new(false));
        let probe = latency_probe(paths[0].ranker.clone(), users.clone(), k, stop.clone());
        std::thread::sleep(std::time::Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let (_, p50, p99) = p50_p99(&probe.join().map_err(|_| OnlineError::Invalid("latency probe panicked".into()))?);
        (res.idle_p50_ms, res.idle_p99_ms) = (p50, p99);
    }
    if trained {
        res.rounds.push(do_round(&paths[0].ranker, 0)?);
    }
    let mut tracks: std::collections::BTreeMap<&'static str, NewItemTrack> = Default::default();
    for (c, chunk) in rest.chunks(per).enumerate() {
        // The chunk's new items are catalogued, then one poll rebuilds the serving rankers.
        let new = &arrivals[c + 1];
        let t_insert = Instant::now();
        catalogue(&store, new, features)?;
        paths = serving_rankers(&cfg, &store, trained)?;
        let servable_ms = t_insert.elapsed().as_secs_f64() * 1e3;
        let new_set: std::collections::HashSet<&str> = new.iter().copied().collect();
        let t0 = chunk.first().map_or(0, |e| e.ts_ms);
        // per path: user -> items served at the user's first event of the chunk
        let mut served: Vec<std::collections::HashMap<&str, Vec<String>>> = vec![Default::default(); paths.len()];
        let mut first_rec: Vec<std::collections::HashMap<String, i64>> = vec![Default::default(); paths.len()];
        let mut hit_users: std::collections::HashSet<&str> = Default::default();
        let mut new_hit_users: Vec<std::collections::HashSet<&str>> = vec![Default::default(); paths.len()];
        for e in chunk {
            for (p, path) in paths.iter().enumerate() {
                path.ranker.observe(std::slice::from_ref(e));
                match served[p].get(e.user.as_str()) {
                    Some(items) => {
                        if items.iter().any(|s| s == &e.sku) {
                            if p == 0 {
                                hit_users.insert(e.user.as_str());
                            }
                            if new_set.contains(e.sku.as_str()) {
                                new_hit_users[p].insert(e.user.as_str());
                            }
                        }
                    }
                    None => {
                        let rec =
                            path.ranker.recommend(&e.user, k, &RequestCtx { now_ms: e.ts_ms, ..Default::default() });
                        let items: Vec<String> = rec.items.into_iter().map(|i| i.sku).collect();
                        for s in items.iter().filter(|s| new_set.contains(s.as_str())) {
                            first_rec[p].entry(s.clone()).or_insert(e.ts_ms);
                        }
                        served[p].insert(e.user.as_str(), items);
                    }
                }
            }
        }
        // Users with a later event in the chunk.
        let mut later: std::collections::HashMap<&str, usize> = Default::default();
        for e in chunk {
            *later.entry(e.user.as_str()).or_default() += 1;
        }
        let eligible = later.values().filter(|&&n| n > 1).count();
        res.hits += hit_users.len() as u64;
        res.served_users += eligible as u64;
        res.hit_rate.push(hit_users.len() as f64 / eligible.max(1) as f64);
        for (p, path) in paths.iter().enumerate() {
            let t = tracks.entry(path.name).or_default();
            t.catalogued += new.len() as u64;
            t.servable_ms_max = t.servable_ms_max.max(servable_ms);
            t.minutes.extend(first_rec[p].values().map(|&ts| (ts - t0) as f64 / 60_000.0));
            t.hits += new_hit_users[p].len() as u64;
        }
        store.insert_events(chunk)?;
        if trained && c + 1 < n_chunks {
            res.rounds.push(do_round(&paths[0].ranker, c + 1)?);
        }
    }
    res.new_items = tracks.into_iter().map(|(name, t)| t.stat(name)).collect();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(res)
}

/// Runs the benchmark: every arm over the same events.
pub fn run(a: &LoopBenchArgs) -> Result<LoopBenchReport> {
    let path = crate::learn::data::find_inter(&a.data)?;
    let events = load_timed_inter(&path)?;
    if events.len() <= 10 {
        return Err(OnlineError::Invalid(format!("{}: too few rows", path.display())));
    }
    let mut cfg = match &a.config {
        Some(p) => Config::load(p).map_err(|e| OnlineError::Invalid(e.to_string()))?,
        None => Config::default(),
    };
    if let Some(e) = a.epochs {
        cfg.online.epochs = e;
    }
    let warm = ((events.len() as f64) * a.warmup.clamp(0.05, 0.95)) as usize;
    let features = a.features.iter().map(|p| FeatureFile::load(p)).collect::<Result<Vec<_>>>()?;
    let mut arms = Vec::new();
    for arm in &a.arms {
        eprintln!("arm {arm} ...");
        arms.push(run_arm(arm, &cfg, &events, &features, warm, a.rounds, a.k)?);
    }
    let mut models: Vec<String> =
        arms.iter().flat_map(|a| a.rounds.iter().map(|r| r.model.clone())).filter(|m| !m.is_empty()).collect();
    models.dedup();
    Ok(LoopBenchReport {
        data: path.display().to_string(),
        events: events.len(),
        warmup_events: warm,
        k: a.k,
        model: if models.is_empty() { format!("{:?}", cfg.online.model).to_lowercase() } else { models.join(", ") },
        arms,
    })
}

impl std::fmt::Display for LoopBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "bench loop: {} ({} events, {} warm-up, then {} chunks), model {}, k = {}",
            self.data,
            self.events,
            self.warmup_events,
            self.arms.first().map_or(0, |a| a.hit_rate.len()),
            self.model,
            self.k
        )?;
        writeln!(f, "| arm | online hit rate per chunk | overall | rounds (promoted) | round wall s mean / max | peak RSS MB | recommend p50 / p99 ms idle | p50 / p99 ms while training |")?;
        writeln!(f, "|---|---|---|---|---|---|---|---|")?;
        for a in &self.arms {
            let hr: Vec<String> = a.hit_rate.iter().map(|h| format!("{h:.3}")).collect();
            let n = a.rounds.len();
            let promoted = a.rounds.iter().filter(|r| r.decision == "promoted").count();
            let mean = a.rounds.iter().map(|r| r.wall_s).sum::<f64>() / n.max(1) as f64;
            let max = a.rounds.iter().map(|r| r.wall_s).fold(0.0, f64::max);
            let rss = a.rounds.iter().filter_map(|r| r.peak_rss_mb).max();
            let p50 = a.rounds.iter().map(|r| r.p50_ms).fold(f64::NAN, f64::max);
            let p99 = a.rounds.iter().map(|r| r.p99_ms).fold(f64::NAN, f64::max);
            writeln!(
                f,
                "| {} | {} | {:.3} ({}/{}) | {n} ({promoted}) | {mean:.2} / {max:.2} | {} | {:.3} / {:.3} | {} |",
                a.arm,
                hr.join(" "),
                a.hits as f64 / a.served_users.max(1) as f64,
                a.hits,
                a.served_users,
                rss.map_or("-".into(), |r| r.to_string()),
                a.idle_p50_ms,
                a.idle_p99_ms,
                if n == 0 { "-".to_string() } else { format!("{p50:.3} / {p99:.3} (worst round)") }
            )?;
        }
        for a in self.arms.iter().filter(|a| !a.rounds.is_empty()) {
            for r in &a.rounds {
                writeln!(
                    f,
                    "  {} round after chunk {}: {} in {:.2} s ({} epochs, train {:.2} s), valid R@20 {:.4} vs baseline {:.4}, {} requests p99 {:.3} ms",
                    a.arm, r.after_chunk, r.decision, r.wall_s, r.epochs, r.train_s, r.valid_recall20, r.baseline_recall20, r.requests, r.p99_ms
                )?;
            }
        }
        writeln!(f, "new items (catalogued when the chunk that first sells them opens):")?;
        writeln!(f, "| arm | path | catalogued | servable after (ms, worst poll) | recommended in their chunk | replay minutes to first recommendation p50 / p90 | users who bought one recommended to them |")?;
        writeln!(f, "|---|---|---|---|---|---|---|")?;
        for a in &self.arms {
            for n in &a.new_items {
                writeln!(
                    f,
                    "| {} | {} | {} | {:.0} | {} ({:.1} %) | {:.0} / {:.0} | {} |",
                    a.arm,
                    n.path,
                    n.catalogued,
                    n.servable_ms_max,
                    n.recommended,
                    100.0 * n.recommended as f64 / n.catalogued.max(1) as f64,
                    n.minutes_p50,
                    n.minutes_p90,
                    n.hits
                )?;
            }
        }
        Ok(())
    }
}

impl super::Report for LoopBenchReport {}
