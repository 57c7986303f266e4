//! One fine-tune round: store interactions -> per-user time split (the newest
//! `online.holdout_per_user` interactions of each user held out) -> warm start from the active
//! model (known users and items keep their rows, new ones get fresh rows) -> training with the
//! `online.optim` optimiser (SGBD by default) under an epoch cap, early stopping and a time budget,
//! keeping the best-valid parameters -> candidate and active scored on the same held-out slice ->
//! promotion gate -> registry (files, metrics, sha256, lineage) -> status Active or Rejected.
//!
//! The gate is unbiased: the users with held-out interactions are split at random (per round)
//! into a *stop* half, whose held-out interactions pick the best epoch, and a *gate* half, on
//! which candidate and active are compared. Picking the best of many epochs on the slice it is
//! then judged on would favour the candidate by the luck of that choice; on the gate half the
//! candidate's score is as unbiased as the active model's. (Fewer than two such users: one slice
//! serves both, and the metrics say `"gate": "shared-slice"`.)
//!
//! The active model is scored the way it would serve: its own embeddings for the users and items
//! it knows, store popularity (from the train part only) for users it does not know, items it does
//! not know ranked last. With no active model, the candidate must beat store popularity.

use super::features::{fit_projection, ItemFeatures};
use super::{OnlineError, Result};
use crate::config::Config;
use crate::learn::data::{IdMaps, Interactions};
use crate::learn::eval::{evaluate, RankMetrics};
use crate::learn::model::{ModelKind, Recommender};
use crate::learn::optim::{self, Optimizer};
use crate::learn::sampler::NegativeSampler;
use crate::learn::trainer::{self, epoch_rng, evaluate_model, Split};
use crate::registry::{Registry, ServingModel};
use crate::store::{Event, ModelStatus, ModelVersionRow, Store};
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Where a test can make a round fail on purpose (crash simulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// After training, before anything is written.
    AfterTraining,
    /// After the version folder is in place, before the store row.
    AfterFilesWritten,
    /// After the store row (status candidate), before the promotion.
    AfterRegistered,
}

/// Knobs for tests and benchmarks (all off in the daemon).
#[derive(Debug, Clone, Default)]
pub struct RoundHooks {
    pub fail_at: Option<FailPoint>,
    /// Train on item ids shuffled across pairs (a deliberately bad candidate).
    pub shuffle_train_items: bool,
    /// Early-stop and gate on the same held-out slice (the biased scheme the gate replaced; kept
    /// to measure that bias in tests).
    pub gate_on_stop_slice: bool,
}

/// Moves the held-out pairs of a random half of the users (seeded) from `data.valid` (the stop
/// slice) to `data.test` (the gate slice). Returns false, moving nothing, with under two users.
fn split_gate_users(data: &mut Interactions, seed: u64) -> bool {
    use rand::seq::SliceRandom;
    let mut users: Vec<u32> = data.valid.iter().map(|p| p.0).collect();
    users.sort_unstable();
    users.dedup();
    if users.len() < 2 {
        return false;
    }
    users.shuffle(&mut epoch_rng(seed, usize::MAX));
    let gate: std::collections::HashSet<u32> = users[..users.len() / 2].iter().copied().collect();
    let (to_gate, stop): (Vec<_>, Vec<_>) = data.valid.iter().partition(|p| gate.contains(&p.0));
    data.test = to_gate;
    data.valid = stop;
    true
}

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Promoted,
    Rejected,
    /// Passed the gate but a pinned version stays active.
    Pinned,
}

/// The result of a round.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    pub version: String,
    pub parent: Option<String>,
    pub decision: Decision,
    pub candidate: RankMetrics,
    pub baseline: RankMetrics,
    /// `active:<version>` or `popularity`.
    pub baseline_name: String,
    pub metrics: serde_json::Value,
    pub serving: ServingModel,
    pub epochs: usize,
    pub train_s: f64,
    pub events_used: u64,
}

const KS: [usize; 2] = [10, 20];

/// Parses the `model.*` tensors of a version's checkpoint.
fn load_checkpoint_vars(dir: &std::path::Path) -> Result<HashMap<String, Tensor>> {
    let p = dir.join(crate::learn::checkpoint::TENSORS);
    let t = candle_core::safetensors::load(&p, &Device::Cpu)?;
    Ok(t.into_iter().filter_map(|(k, v)| k.strip_prefix("model.").map(|s| (s.to_string(), v))).collect())
}

/// External keys of a variable's rows, for the layouts the warm start knows.
fn row_keys(var: &str, users: &[String], items: &[String]) -> Option<Vec<String>> {
    let u = || users.iter().map(|s| format!("u:{s}"));
    let i = || items.iter().map(|s| format!("i:{s}"));
    match var {
        "mf.user" | "user" => Some(u().collect()),
        "mf.item" | "item" => Some(i().collect()),
        "lightgcn.ego" => Some(u().chain(i()).collect()),
        // FREEDOM's trainable copies of the item features
        v if v.starts_with("feat") && v[4..].parse::<usize>().is_ok() => Some(i().collect()),
        _ => None,
    }
}

/// Copies the rows of known users and items from the active checkpoint; returns rows copied.
fn warm_start(
    model: &dyn Recommender,
    old: &HashMap<String, Tensor>,
    old_sm: &ServingModel,
    maps: &IdMaps,
) -> Result<usize> {
    let mut copied = 0;
    for (name, var) in model.named_vars() {
        let Some(old_t) = old.get(&name) else { continue };
        let (Some(new_keys), Some(old_keys)) =
            (row_keys(&name, &maps.users, &maps.items), row_keys(&name, &old_sm.users, &old_sm.items))
        else {
            // not indexed by users or items (a projection layer): carried over whole when it fits
            if old_t.shape() == var.shape() {
                var.set(&old_t.to_dtype(var.dtype())?.to_device(var.device())?)?;
            } else {
                tracing::warn!(var = %name, "warm start skipped: shape differs from the active checkpoint");
            }
            continue;
        };
        let (rows, d) = var.as_tensor().dims2()?;
        let (orows, od) = old_t.dims2()?;
        if od != d || orows != old_keys.len() || rows != new_keys.len() {
            tracing::warn!(var = %name, "warm start skipped: shapes differ from the active checkpoint");
            continue;
        }
        let old_v: Vec<f32> = old_t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
        let mut new_v: Vec<f32> = var.as_tensor().to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
        let index: HashMap<&str, usize> = old_keys.iter().enumerate().map(|(r, k)| (k.as_str(), r)).collect();
        for (r, k) in new_keys.iter().enumerate() {
            if let Some(&o) = index.get(k.as_str()) {
                new_v[r * d..(r + 1) * d].copy_from_slice(&old_v[o * d..(o + 1) * d]);
                copied += 1;
            }
        }
        var.set(&Tensor::from_vec(new_v, (rows, d), var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(copied)
}

/// Scores the active model (or popularity) on `data`'s valid slice, as it would serve.
fn baseline_metrics(
    data: &Interactions,
    maps: &IdMaps,
    active: Option<&ServingModel>,
    split: Split,
    block: usize,
) -> Result<RankMetrics> {
    let mut pop = vec![0f32; data.n_items];
    for &(_, i) in &data.train {
        pop[i as usize] += 1.0;
    }
    let pmax = pop.iter().copied().fold(1.0, f32::max);
    pop.iter_mut().for_each(|p| *p /= pmax);
    let (d, uidx, iidx) = match active {
        Some(sm) => (
            sm.dim,
            sm.users.iter().enumerate().map(|(r, s)| (s.as_str(), r)).collect::<HashMap<_, _>>(),
            sm.items.iter().enumerate().map(|(r, s)| (s.as_str(), r)).collect::<HashMap<_, _>>(),
        ),
        None => (0, HashMap::new(), HashMap::new()),
    };
    // Columns: the model's d dims, one popularity dim, one "unknown item" dim.
    let w = d + 2;
    let mut u = vec![0f32; data.n_users * w];
    for (r, name) in maps.users.iter().enumerate() {
        match (active, uidx.get(name.as_str())) {
            (Some(sm), Some(&o)) => {
                u[r * w..r * w + d].copy_from_slice(&sm.user_emb[o * d..(o + 1) * d]);
                u[r * w + d + 1] = 1.0;
            }
            _ => {
                u[r * w + d] = 1.0;
                u[r * w + d + 1] = 1.0;
            }
        }
    }
    let mut it = vec![0f32; data.n_items * w];
    for (r, name) in maps.items.iter().enumerate() {
        it[r * w + d] = pop[r];
        match (active, iidx.get(name.as_str())) {
            (Some(sm), Some(&o)) => it[r * w..r * w + d].copy_from_slice(&sm.item_emb[o * d..(o + 1) * d]),
            (Some(_), None) => it[r * w + d + 1] = -1e6,
            (None, _) => {}
        }
    }
    let dev = Device::Cpu;
    let ut = Tensor::from_vec(u, (data.n_users, w), &dev)?;
    let itt = Tensor::from_vec(it, (data.n_items, w), &dev)?;
    let target = match split {
        Split::Valid => data.valid_by_user(),
        Split::Test => data.test_by_user(),
    };
    Ok(evaluate(&ut, &itt, &data.train_by_user(), &target, &KS, block)?)
}

/// Rough bytes a round needs: parameters with gradients, Adam moments, SAM backups and
/// propagation buffers (about 12 copies), plus the graph (both CSR directions).
pub fn estimate_bytes(n_users: usize, n_items: usize, n_train: usize, dim: usize, layers: usize) -> u64 {
    let params = ((n_users + n_items) * dim * 4) as u64;
    params * (10 + layers as u64) + (n_train as u64) * 2 * 2 * 12
}

/// Loads the active version for a warm start; `None` (with a log line) when it is unusable.
fn load_active(reg: &Registry, row: &ModelVersionRow) -> Option<(ServingModel, HashMap<String, Tensor>, String)> {
    let loaded = reg.load_serving(row).and_then(|(m, sm)| {
        let vars = load_checkpoint_vars(&reg.dir(&row.version))
            .map_err(|e| crate::registry::RegistryError::Invalid(e.to_string()))?;
        Ok((sm, vars, m.model))
    });
    match loaded {
        Ok(x) => Some(x),
        Err(e) => {
            tracing::error!(version = %row.version, error = %e, "active model unusable for the round; comparing with popularity");
            None
        }
    }
}

/// Runs one round (see the module doc). `stop` aborts between epochs, leaving nothing behind.
pub fn run(cfg: &Config, store: &Store, reg: &Registry, stop: &AtomicBool, hooks: &RoundHooks) -> Result<RoundOutcome> {
    let t_round = Instant::now();
    let events: Vec<Event> = store.interactions()?;
    let events_used = events.len() as u64;
    let triples: Vec<(&str, &str, i64)> = events.iter().map(|e| (e.user.as_str(), e.sku.as_str(), e.ts_ms)).collect();
    let (mut data, maps) = Interactions::from_timed(&triples, cfg.online.holdout_per_user, 0);
    drop(triples);
    if data.train.is_empty() || data.valid.is_empty() {
        return Err(OnlineError::NotEnoughData(format!(
            "{} train and {} held-out interactions; users need more than {} interactions each",
            data.train.len(),
            data.valid.len(),
            cfg.online.holdout_per_user
        )));
    }
    let lc = &cfg.learn;
    let need = estimate_bytes(data.n_users, data.n_items, data.train.len(), lc.dim, lc.layers);
    if need > cfg.online.memory_budget_mb << 20 {
        return Err(OnlineError::OverBudget(format!(
            "about {} MiB needed, online.memory_budget_mb = {}",
            need >> 20,
            cfg.online.memory_budget_mb
        )));
    }
    if hooks.shuffle_train_items {
        use rand::seq::SliceRandom;
        let mut items: Vec<u32> = data.train.iter().map(|p| p.1).collect();
        items.shuffle(&mut epoch_rng(lc.seed ^ 0xBAD, 0));
        data.train.iter_mut().zip(items).for_each(|(p, i)| p.1 = i);
    }

    let active_row = store.active_model()?;
    let active = active_row.as_ref().and_then(|r| load_active(reg, r));
    let parent = match (&active_row, &active) {
        (Some(r), Some(_)) => Some(r.version.clone()),
        _ => None,
    };

    // The model: `online.model`, FREEDOM for `auto` once the store holds item features.
    let feats = ItemFeatures::load(store)?;
    let kind_of_model =
        cfg.online.model.resolve(cfg.learn.model, !feats.is_empty()).map_err(OnlineError::NotEnoughData)?;
    let lc = &crate::config::LearnConfig { model: kind_of_model, ..cfg.learn.clone() };
    let multimodal = matches!(kind_of_model, ModelKind::Vbpr | ModelKind::Freedom);
    let modalities = if multimodal { feats.modalities(&maps.items)? } else { Vec::new() };
    let model_name = format!("{:?}", lc.model).to_lowercase();
    tracing::info!(model = %model_name, choice = ?cfg.online.model, feature_items = feats.len(), "round model");
    let mut model = trainer::build_model(lc, &data, &modalities)?;
    // A multimodal model trained on other feature sets (another encoder, dimension or modality)
    // cannot continue from its rows.
    let active_sets = active_row.as_ref().map(|r| r.metrics["features"].clone()).unwrap_or_default();
    let warm_rows = match &active {
        Some(_) if multimodal && !feats.same_sets(&active_sets) => {
            tracing::info!(now = %feats.record(), active = %active_sets, "item feature sets changed; training from scratch");
            0
        }
        Some((sm, vars, kind)) if *kind == model.name() => warm_start(model.as_ref(), vars, sm, &maps)?,
        Some((_, _, kind)) => {
            tracing::info!(active = %kind, now = %model.name(), "model kind changed; training from scratch");
            0
        }
        None => 0,
    };
    let block = lc.eval_block.max(1);
    let disjoint = !hooks.gate_on_stop_slice && split_gate_users(&mut data, lc.seed.wrapping_add(events_used));
    let gate_split = if disjoint { Split::Test } else { Split::Valid };
    if !disjoint && !hooks.gate_on_stop_slice {
        tracing::warn!("under two users with held-out interactions: the gate uses the early-stopping slice");
    }
    let baseline = baseline_metrics(&data, &maps, active.as_ref().map(|a| &a.0), gate_split, block)?;
    let baseline_name = parent.as_ref().map_or("popularity".to_string(), |v| format!("active:{v}"));

    // Train, keeping the best-valid parameters.
    let (_, params) = trainer::optim_from_config(lc);
    params.validate()?;
    let kind = cfg.online.optim.with_variant(lc.variant);
    let mut opt = optim::build(kind, &params, model.named_vars())?;
    let train_ui = data.train_by_user();
    // MMRec's negative rule, as `train` (`[learn] negatives`): in the store's time split the items
    // absent from train are the newest ones, which the `all` rule would push down as negatives.
    let sampler = NegativeSampler::new(data.n_items, &train_ui, lc.negatives)?;
    // Mirror Gradient's schedule counts batches across the round's epochs: a store under
    // `batch` train pairs has one batch per epoch, and MMRec's per-epoch batch index would make
    // every step a mirror step.
    let batches_per_epoch = data.train.len().div_ceil(lc.batch.max(1));
    let mut steps = 0usize;
    let t_train = Instant::now();
    let budget = std::time::Duration::from_secs(cfg.online.time_budget_s);
    let mut best: Option<(RankMetrics, usize, Vec<Tensor>)> = None;
    let mut bad = 0usize;
    let mut epochs = 0usize;
    for epoch in 0..cfg.online.epochs {
        if stop.load(Ordering::Relaxed) {
            return Err(OnlineError::Aborted);
        }
        let mut rng = epoch_rng(lc.seed.wrapping_add(events_used), epoch);
        trainer::train_epoch(model.as_mut(), &mut opt, &sampler, &data.train, lc.batch, steps, &mut rng, &mut None)?;
        steps += batches_per_epoch;
        epochs += 1;
        let valid = evaluate_model(model.as_ref(), &data, Split::Valid, &KS, block)?;
        // Recall@20 first; NDCG@20 breaks ties (recall saturates on small catalogues).
        let better = best.as_ref().is_none_or(|(b, _, _)| {
            (valid.recall_at(20), valid.ndcg_at(20)).partial_cmp(&(b.recall_at(20), b.ndcg_at(20)))
                == Some(std::cmp::Ordering::Greater)
        });
        if better {
            let snap = model
                .named_vars()
                .iter()
                .map(|(_, v)| v.as_tensor().copy())
                .collect::<candle_core::Result<Vec<_>>>()?;
            best = Some((valid, epoch, snap));
            bad = 0;
        } else {
            bad += 1;
        }
        if cfg.online.patience > 0 && bad >= cfg.online.patience {
            break;
        }
        if t_train.elapsed() >= budget {
            tracing::info!(epochs, "round stopped by its time budget");
            break;
        }
    }
    let train_s = t_train.elapsed().as_secs_f64();
    let Some((stop_metrics, best_epoch, snap)) = best else {
        return Err(OnlineError::NotEnoughData("no epoch ran".into()));
    };
    for ((_, v), t) in model.named_vars().iter().zip(&snap) {
        v.set(t)?;
    }
    // the candidate as the gate sees it: on the gate half, scored once
    let candidate = match gate_split {
        Split::Test => evaluate_model(model.as_ref(), &data, Split::Test, &KS, block)?,
        Split::Valid => stop_metrics.clone(),
    };
    if hooks.fail_at == Some(FailPoint::AfterTraining) {
        return Err(OnlineError::Injected(FailPoint::AfterTraining));
    }

    // The gate.
    let tol = cfg.online.tolerance;
    let passes =
        candidate.recall_at(20) >= baseline.recall_at(20) - tol && candidate.ndcg_at(20) >= baseline.ndcg_at(20) - tol;
    let pinned = reg.pinned()?;
    let decision = match (passes, &pinned) {
        (false, _) => Decision::Rejected,
        (true, Some(_)) => Decision::Pinned,
        (true, None) => Decision::Promoted,
    };

    // Serving model: final embeddings, id maps, and the feature projection.
    let (ue, ie) = model.embeddings()?;
    let dim = ue.dims2()?.1;
    let user_emb: Vec<f32> = ue.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    let item_emb: Vec<f32> = ie.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    let projection = fit_projection(&feats, dim, cfg.online.projection_ridge, |sku| {
        maps.item_index.get(sku).map(|&i| &item_emb[i as usize * dim..(i as usize + 1) * dim])
    })?;
    let graph =
        model.item_graph_parts()?.map(|parts| crate::registry::ServingGraph { layout: feats.layout.clone(), parts });
    let serving = ServingModel {
        users: maps.users.clone(),
        items: maps.items.clone(),
        dim,
        user_emb,
        item_emb,
        projection,
        graph,
    };

    let version = Registry::new_version(&model_name);
    let metrics = serde_json::json!({
        "recall@10": candidate.recall_at(10), "recall@20": candidate.recall_at(20),
        "ndcg@10": candidate.ndcg_at(10), "ndcg@20": candidate.ndcg_at(20),
        "baseline": baseline_name,
        "baseline_recall@20": baseline.recall_at(20), "baseline_ndcg@20": baseline.ndcg_at(20),
        "valid_users": candidate.n_users, "tolerance": tol,
        "gate": if disjoint { "disjoint-users" } else { "shared-slice" },
        "stop_users": stop_metrics.n_users, "stop_recall@20": stop_metrics.recall_at(20),
        "stop_ndcg@20": stop_metrics.ndcg_at(20),
        "decision": decision, "pinned": pinned,
        "users": data.n_users, "items": data.n_items, "train_pairs": data.train.len(), "valid_pairs": data.valid.len(),
        "events": events_used, "warm_start_rows": warm_rows,
        "optim": kind.label(), "model": model_name, "model_choice": cfg.online.model,
        "features": if multimodal { feats.record() } else { serde_json::Value::Array(vec![]) },
        "epochs": epochs, "best_epoch": best_epoch,
        "train_s": train_s, "round_s": t_round.elapsed().as_secs_f64(),
        "peak_rss_bytes": crate::sys::peak_rss_bytes(),
        "projection": serving.projection.as_ref().map(|p| p.feature_dim),
        "shuffled_labels": hooks.shuffle_train_items,
    });
    let state = serde_json::json!({ "version": version, "events": events_used });
    let written = reg.write_version(&version, parent.as_deref(), &model_name, &metrics, |dir| {
        crate::learn::checkpoint::save(dir, model.as_ref(), &opt as &dyn Optimizer, &state)
            .map_err(|e| crate::registry::RegistryError::Invalid(format!("checkpoint: {e}")))?;
        serving.save(dir, &model_name)
    })?;
    if hooks.fail_at == Some(FailPoint::AfterFilesWritten) {
        return Err(OnlineError::Injected(FailPoint::AfterFilesWritten));
    }
    reg.register(store, &written, &metrics, ModelStatus::Candidate)?;
    if hooks.fail_at == Some(FailPoint::AfterRegistered) {
        return Err(OnlineError::Injected(FailPoint::AfterRegistered));
    }
    match decision {
        Decision::Promoted => store.set_model_status(&version, ModelStatus::Active)?,
        Decision::Rejected => store.set_model_status(&version, ModelStatus::Rejected)?,
        Decision::Pinned => {}
    }
    tracing::info!(
        version = %version,
        decision = ?decision,
        recall20 = candidate.recall_at(20),
        ndcg20 = candidate.ndcg_at(20),
        baseline = %baseline_name,
        baseline_recall20 = baseline.recall_at(20),
        baseline_ndcg20 = baseline.ndcg_at(20),
        epochs,
        train_s,
        "fine-tune round done"
    );
    Ok(RoundOutcome {
        version,
        parent,
        decision,
        candidate,
        baseline,
        baseline_name,
        metrics,
        serving,
        epochs,
        train_s,
        events_used,
    })
}
