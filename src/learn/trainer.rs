//! The training loop: per epoch, shuffle the train pairs and draw negatives, one optimiser step
//! per batch, then a full-ranking evaluation on valid; early stopping on valid Recall@`valid_k`
//! as MMRec's `utils.early_stopping` ([`early_stopping`]); test metrics are computed whenever
//! valid improves, so the report holds the test metrics of the best-valid epoch. Valid and test
//! users with no train interaction are left out of both (MMRec's `filter_out_cod_start_users`).
//! Optional checkpoint after every epoch (and resume).

use super::checkpoint;
use super::data::Interactions;
use super::data::UserItems;
use super::eval::{evaluate, RankMetrics};
use super::model::{Batch, ModelKind, Recommender};
use super::optim::{OptimKind, OptimParams, Optimizer};
use super::sampler::{NegativeSampler, Negatives};
use super::{LearnError, OpPath, Result};
use crate::config::LearnConfig;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainOptions {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// MMRec's `stopping_step`: stop after `patience + 1` consecutive epochs whose valid
    /// Recall@`valid_k`, rounded to 4 decimals, is not strictly above the best (0 = never stop early).
    pub patience: usize,
    /// The negative pool (default: MMRec's, items that occur in train).
    #[serde(default)]
    pub negatives: Negatives,
    pub batch: usize,
    pub seed: u64,
    /// Users per block in evaluation.
    pub eval_block: usize,
    pub ks: Vec<usize>,
    pub valid_k: usize,
    /// Checkpoint folder: saved after every epoch, resumed from when it holds a checkpoint.
    pub checkpoint: Option<PathBuf>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 1000,
            patience: 20,
            negatives: Negatives::Train,
            batch: 2048,
            seed: 999,
            eval_block: 1024,
            ks: vec![5, 10, 20],
            valid_k: 20,
            checkpoint: None,
        }
    }
}

/// One epoch of the curve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub valid: RankMetrics,
    pub train_s: f64,
    /// CPU seconds of the training part (all threads).
    pub train_cpu_s: f64,
    /// Valid evaluation time.
    pub eval_s: f64,
    pub eval_cpu_s: f64,
    /// Test evaluation time when valid improved (else 0).
    pub test_eval_s: f64,
    pub improved: bool,
    pub grad_evals: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainReport {
    pub model: String,
    pub optim: String,
    /// Where the parameters lived: "cpu" or "cuda".
    #[serde(default)]
    pub device: String,
    pub options: TrainOptions,
    pub curve: Vec<EpochRecord>,
    pub epochs_run: usize,
    pub best_epoch: Option<usize>,
    pub best_valid: Option<RankMetrics>,
    /// Test metrics at the best-valid epoch.
    pub test: Option<RankMetrics>,
    pub stopped_early: bool,
    pub train_s_per_epoch: f64,
    pub eval_s_per_pass: f64,
    pub train_cpu_s_per_epoch: f64,
    pub eval_cpu_s_per_pass: f64,
    /// Wall time from the start until the end of the best epoch's evaluation.
    pub time_to_best_s: f64,
    pub total_s: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// The summary `train` prints after the last epoch (and `bench train` after each run): epochs,
/// best epoch, times, peak RSS, then the test metrics at each cut-off.
impl std::fmt::Display for TrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} epochs{}, best epoch {:?}, {:.2} s/epoch train, {:.2} s/eval, total {:.1} s, peak RSS {}",
            self.epochs_run,
            if self.stopped_early { " (early stop)" } else { "" },
            self.best_epoch,
            self.train_s_per_epoch,
            self.eval_s_per_pass,
            self.total_s,
            self.peak_rss_bytes.map_or("?".into(), |b| format!("{:.0} MB", b as f64 / 1e6)),
        )?;
        if let Some(t) = &self.test {
            for &k in &t.ks {
                writeln!(
                    f,
                    "test @{k:<2}  recall {:.4}  ndcg {:.4}  precision {:.4}",
                    t.recall_at(k),
                    t.ndcg_at(k),
                    t.precision_at(k)
                )?;
            }
        }
        Ok(())
    }
}

/// Callbacks for the command line (per-epoch lines, a progress indicator).
#[derive(Default)]
pub struct Hooks<'a> {
    pub on_epoch: Option<&'a mut dyn FnMut(&EpochRecord)>,
    /// (batch done, batches in the epoch)
    pub on_batch: Option<&'a mut dyn FnMut(usize, usize)>,
}

/// The RNG of epoch `epoch` (shuffling, negatives, per-epoch model hooks), derived from the seed
/// alone so that a resumed run draws exactly what an uninterrupted one would.
pub fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    let mut z = seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

#[derive(Serialize, Deserialize)]
struct Resume {
    epoch: usize,
    seed: u64,
    best_epoch: Option<usize>,
    best_valid: Option<RankMetrics>,
    test: Option<RankMetrics>,
    bad_epochs: usize,
    curve: Vec<EpochRecord>,
    elapsed_s: f64,
    time_to_best_s: f64,
}

/// A metric as MMRec's `TopKEvaluator` reports it: rounded to 4 decimals.
pub fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// What [`early_stopping`] decided for one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopStep {
    /// The best (rounded) score after this epoch.
    pub best: f64,
    /// Consecutive epochs without a strict improvement, this one included.
    pub bad_epochs: usize,
    pub stop: bool,
    pub improved: bool,
}

/// MMRec's `utils.utils.early_stopping` (bigger is better) on a 4-decimal-rounded valid score:
/// strictly above `best` is an improvement (the counter resets), otherwise the counter grows and
/// training stops once it exceeds `patience`, i.e. after `patience + 1` bad epochs. `best` starts
/// below any score (MMRec: -1), so the first epoch always improves. `patience == 0` never stops
/// (this project's meaning of 0; MMRec would stop after one bad epoch).
pub fn early_stopping(score: f64, best: Option<f64>, bad_epochs: usize, patience: usize) -> StopStep {
    let score = round4(score);
    if best.is_none_or(|b| score > b) {
        return StopStep { best: score, bad_epochs: 0, stop: false, improved: true };
    }
    let bad_epochs = bad_epochs + 1;
    StopStep { best: best.unwrap_or(score), bad_epochs, stop: patience > 0 && bad_epochs > patience, improved: false }
}

/// `target` without the users who have no train interaction (MMRec drops such cold-start users'
/// valid and test rows: `filter_out_cod_start_users`, on by default).
pub fn without_cold_users(target: &UserItems, train: &UserItems) -> UserItems {
    let pairs: Vec<(u32, u32)> = (0..target.n_users())
        .filter(|&u| !train.get(u).is_empty())
        .flat_map(|u| target.get(u).iter().map(move |&i| (u as u32, i)))
        .collect();
    UserItems::from_pairs(target.n_users(), &pairs)
}

/// Runs one epoch of training; returns the mean batch loss. Batch `k` of the epoch is step
/// `first_step + k` of the optimiser's schedule (Mirror Gradient mirrors on steps
/// `mod beta == 0`): 0 restarts the schedule every epoch as MMRec (its batch index); the
/// daemon's rounds pass the number of batches already run so the schedule counts across epochs.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    model: &mut dyn Recommender,
    opt: &mut dyn Optimizer,
    sampler: &NegativeSampler,
    train: &[(u32, u32)],
    batch: usize,
    first_step: usize,
    rng: &mut StdRng,
    on_batch: &mut Option<&mut dyn FnMut(usize, usize)>,
) -> Result<f64> {
    model.on_epoch_start(rng)?;
    let batches = sampler.epoch(train, batch, rng)?;
    let n = batches.len();
    let mut sum = 0f64;
    let dev = model.device();
    for (k, b) in batches.into_iter().enumerate() {
        let b = Batch::from_vecs(b.users, b.pos, b.neg, &dev)?;
        // the step runs on a rayon worker: its parallel loops split there directly instead of
        // being injected into the pool (and waited for) from this thread, loop after loop
        let (model_w, opt_w) = (&mut *model, &mut *opt);
        let loss = rayon::scope(move |_| {
            let m: &dyn Recommender = model_w;
            opt_w.step_with(&mut || m.loss_and_grads(&b), first_step + k)
        })?;
        sum += loss as f64;
        if let Some(f) = on_batch.as_mut() {
            f(k + 1, n);
        }
    }
    Ok(sum / n.max(1) as f64)
}

/// Trains `model` with `opt` on `data` (see the module doc).
pub fn fit(
    model: &mut dyn Recommender,
    opt: &mut dyn Optimizer,
    data: &Interactions,
    opts: &TrainOptions,
    mut hooks: Hooks<'_>,
) -> Result<TrainReport> {
    data.validate()?;
    if opts.batch == 0 || opts.eval_block == 0 {
        return Err(LearnError::Invalid("batch and eval_block must be > 0".into()));
    }
    let mut ks = opts.ks.clone();
    if !ks.contains(&opts.valid_k) {
        ks.push(opts.valid_k);
    }
    let train_ui = data.train_by_user();
    let valid_ui = without_cold_users(&data.valid_by_user(), &train_ui);
    let test_ui = without_cold_users(&data.test_by_user(), &train_ui);
    let sampler = NegativeSampler::new(data.n_items, &train_ui, opts.negatives)?;
    let start = Instant::now();

    let mut r = Resume {
        epoch: 0,
        seed: opts.seed,
        best_epoch: None,
        best_valid: None,
        test: None,
        bad_epochs: 0,
        curve: vec![],
        elapsed_s: 0.0,
        time_to_best_s: 0.0,
    };
    let mut first_epoch = 0;
    if let Some(dir) = &opts.checkpoint {
        if let Some(state) = checkpoint::load(dir, model, opt)? {
            let saved: Resume = serde_json::from_value(state.get("trainer").cloned().unwrap_or_default())
                .map_err(|e| LearnError::Data { path: dir.join(checkpoint::STATE), msg: e.to_string() })?;
            if saved.seed != opts.seed {
                return Err(LearnError::Invalid(format!(
                    "checkpoint was trained with seed {}, not {}",
                    saved.seed, opts.seed
                )));
            }
            first_epoch = saved.epoch + 1;
            r = saved;
            tracing::info!(dir = %dir.display(), epoch = first_epoch, "resuming from checkpoint");
        }
    }
    let base_elapsed = r.elapsed_s;
    let mut stopped_early = opts.patience > 0 && r.bad_epochs > opts.patience;

    for epoch in first_epoch..opts.epochs {
        if stopped_early {
            break;
        }
        let mut rng = epoch_rng(opts.seed, epoch);
        let (t0, c0) = (Instant::now(), crate::sys::process_cpu_seconds());
        let loss = train_epoch(model, opt, &sampler, &data.train, opts.batch, 0, &mut rng, &mut hooks.on_batch)?;
        let (train_s, c1) = (t0.elapsed().as_secs_f64(), crate::sys::process_cpu_seconds());
        let t1 = Instant::now();
        let (u, i) = model.embeddings()?;
        let valid = evaluate(&u, &i, &train_ui, &valid_ui, &ks, opts.eval_block)?;
        let (eval_s, eval_cpu_s) = (t1.elapsed().as_secs_f64(), crate::sys::process_cpu_seconds() - c1);
        let train_cpu_s = c1 - c0;
        let cur = valid.recall_at(opts.valid_k);
        let best = r.best_valid.as_ref().map(|b| round4(b.recall_at(opts.valid_k)));
        let step = early_stopping(cur, best, r.bad_epochs, opts.patience);
        let improved = step.improved;
        let mut test_eval_s = 0.0;
        if improved {
            let t2 = Instant::now();
            r.test = Some(evaluate(&u, &i, &train_ui, &test_ui, &ks, opts.eval_block)?);
            test_eval_s = t2.elapsed().as_secs_f64();
            r.best_valid = Some(valid.clone());
            r.best_epoch = Some(epoch);
            r.time_to_best_s = base_elapsed + start.elapsed().as_secs_f64();
        }
        r.bad_epochs = step.bad_epochs;
        let rec = EpochRecord {
            epoch,
            loss,
            valid,
            train_s,
            train_cpu_s,
            eval_s,
            eval_cpu_s,
            test_eval_s,
            improved,
            grad_evals: opt.grad_evals(),
        };
        tracing::debug!(epoch, loss, valid_recall = cur, train_s, eval_s, "epoch done");
        if let Some(f) = hooks.on_epoch.as_mut() {
            f(&rec);
        }
        r.curve.push(rec);
        r.epoch = epoch;
        stopped_early = step.stop;
        if let Some(dir) = &opts.checkpoint {
            r.elapsed_s = base_elapsed + start.elapsed().as_secs_f64();
            let state = serde_json::json!({ "trainer": serde_json::to_value(&r).map_err(|e| LearnError::Invalid(e.to_string()))? });
            checkpoint::save(dir, model, opt, &state)?;
        }
    }
    let n = r.curve.len().max(1) as f64;
    Ok(TrainReport {
        model: model.name().to_string(),
        optim: opt.kind().label(),
        device: crate::device::describe(&model.device()).to_string(),
        options: opts.clone(),
        epochs_run: r.curve.len(),
        best_epoch: r.best_epoch,
        best_valid: r.best_valid,
        test: r.test,
        stopped_early,
        train_s_per_epoch: r.curve.iter().map(|e| e.train_s).sum::<f64>() / n,
        eval_s_per_pass: r.curve.iter().map(|e| e.eval_s).sum::<f64>() / n,
        train_cpu_s_per_epoch: r.curve.iter().map(|e| e.train_cpu_s).sum::<f64>() / n,
        eval_cpu_s_per_pass: r.curve.iter().map(|e| e.eval_cpu_s).sum::<f64>() / n,
        time_to_best_s: r.time_to_best_s,
        total_s: base_elapsed + start.elapsed().as_secs_f64(),
        peak_rss_bytes: crate::sys::peak_rss_bytes(),
        curve: r.curve,
    })
}

// ---------------------------------------------------------------------------------------------
// Building a run from the `[learn]` configuration (used by `train` and `bench train`).

/// The optimiser kind and hyper-parameters of a `[learn]` section.
pub fn optim_from_config(cfg: &LearnConfig) -> (OptimKind, OptimParams) {
    let kind = cfg.optim.with_variant(cfg.variant);
    let p = OptimParams {
        lr: cfg.lr,
        rho: cfg.rho,
        alpha1: cfg.alpha1,
        alpha2: cfg.alpha2,
        beta: cfg.beta,
        ..OptimParams::default()
    };
    (kind, p)
}

/// Training options of a `[learn]` section.
pub fn options_from_config(cfg: &LearnConfig, checkpoint: Option<PathBuf>) -> TrainOptions {
    TrainOptions {
        epochs: cfg.epochs,
        patience: cfg.patience,
        negatives: cfg.negatives,
        batch: cfg.batch,
        seed: cfg.seed,
        eval_block: cfg.eval_block,
        checkpoint,
        ..TrainOptions::default()
    }
}

/// Item feature matrices for the multimodal models (one per modality, rows = items).
pub type Features = Vec<super::npy::Modality>;

/// Builds the model of `cfg` for `data` (f32), initialised from `cfg.seed` (on the CPU, so the
/// same seed gives the same start on every device), then placed on `cfg.device`
/// ([`crate::device::select`]: a missing GPU falls back to the CPU with a log line).
pub fn build_model(cfg: &LearnConfig, data: &Interactions, features: &Features) -> Result<Box<dyn Recommender>> {
    let mut model = build_model_on_cpu(cfg, data, features)?;
    let device = crate::device::select(cfg.device);
    if !device.is_cpu() {
        model.place(&device, OpPath::for_device(&device))?;
    }
    tracing::info!(model = model.name(), device = crate::device::describe(&device), "training device");
    Ok(model)
}

fn build_model_on_cpu(cfg: &LearnConfig, data: &Interactions, features: &Features) -> Result<Box<dyn Recommender>> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let dt = candle_core::DType::F32;
    Ok(match cfg.model {
        ModelKind::Mf => Box::new(super::mf::MfBpr::new(data.n_users, data.n_items, cfg.dim, cfg.reg, dt, &mut rng)?),
        ModelKind::Lightgcn => Box::new(super::lightgcn::LightGcn::new(
            data.n_users,
            data.n_items,
            &data.train,
            cfg.dim,
            cfg.layers,
            cfg.reg,
            dt,
            &mut rng,
        )?),
        ModelKind::Vbpr | ModelKind::Freedom if features.is_empty() => {
            return Err(LearnError::Invalid(format!("model {:?} needs item feature files (--features)", cfg.model)))
        }
        ModelKind::Vbpr => {
            let p = super::vbpr::VbprParams { dim: cfg.dim, reg: cfg.reg };
            Box::new(super::vbpr::Vbpr::new(data.n_users, data.n_items, features, &p, dt, &mut rng)?)
        }
        ModelKind::Freedom => {
            let p = super::freedom::FreedomParams {
                dim: cfg.dim,
                ui_layers: cfg.layers,
                dropout: cfg.dropout,
                lambda: cfg.mm_lambda,
                ..super::freedom::FreedomParams::default()
            };
            Box::new(super::freedom::Freedom::new(data.n_users, data.n_items, &data.train, features, &p, dt, &mut rng)?)
        }
    })
}

/// Builds model and optimiser from `cfg` and trains on `data`.
pub fn run(
    cfg: &LearnConfig,
    data: &Interactions,
    features: &Features,
    checkpoint: Option<PathBuf>,
    hooks: Hooks<'_>,
) -> Result<TrainReport> {
    let (kind, params) = optim_from_config(cfg);
    params.validate()?;
    let mut model = build_model(cfg, data, features)?;
    let mut opt = super::optim::build(kind, &params, model.named_vars())?;
    fit(model.as_mut(), &mut opt, data, &options_from_config(cfg, checkpoint), hooks)
}

/// Which held-out split to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Valid,
    Test,
}

/// MMRec's rule for one split: train items are masked, the split's items are the targets (valid
/// items are *not* masked when testing), users without train interactions are left out.
pub fn evaluate_model(
    model: &dyn Recommender,
    data: &Interactions,
    split: Split,
    ks: &[usize],
    block: usize,
) -> Result<RankMetrics> {
    let (u, i) = model.embeddings()?;
    let train = data.train_by_user();
    let target = match split {
        Split::Valid => data.valid_by_user(),
        Split::Test => data.test_by_user(),
    };
    evaluate(&u, &i, &train, &without_cold_users(&target, &train), ks, block)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a scripted sequence of valid scores through [`early_stopping`]; returns the epoch
    /// it stops at (if any) and the improved flags.
    fn script(scores: &[f64], patience: usize) -> (Option<usize>, Vec<bool>) {
        let (mut best, mut bad, mut flags) = (None, 0, vec![]);
        for (e, &s) in scores.iter().enumerate() {
            let st = early_stopping(s, best, bad, patience);
            flags.push(st.improved);
            best = Some(st.best);
            bad = st.bad_epochs;
            if st.stop {
                return (Some(e), flags);
            }
        }
        (None, flags)
    }

    #[test]
    fn early_stopping_is_mmrecs_rounded_strict_rule() {
        // epoch 0 always improves (MMRec's best starts at -1), even at 0
        assert!(early_stopping(0.0, None, 0, 2).improved);
        // 0.10004 rounds to 0.1000: not an improvement; 0.10006 rounds to 0.1001: one
        let s = [0.1, 0.10004, 0.10006, 0.1001, 0.10014, 0.0999, 0.1];
        let (stop, flags) = script(&s, 2);
        assert_eq!(flags, vec![true, false, true, false, false, false]);
        // patience 2: stops at the third bad epoch in a row (patience + 1), epoch 5
        assert_eq!(stop, Some(5));
        // an equal score is not an improvement and counts as bad
        assert_eq!(script(&[0.2, 0.2, 0.2], 1).0, Some(2));
        // a strict improvement resets the counter
        assert_eq!(script(&[0.2, 0.1, 0.3, 0.1, 0.1], 1).0, Some(4));
        // patience 0 never stops
        assert_eq!(script(&[0.3, 0.1, 0.1, 0.1], 0).0, None);
        // MMRec's default, patience 20: the 21st bad epoch stops
        let mut long = vec![0.05];
        long.extend(std::iter::repeat_n(0.04, 25));
        assert_eq!(script(&long, 20).0, Some(21));
    }

    #[test]
    fn cold_start_users_are_dropped_from_targets() {
        let train = UserItems::from_pairs(3, &[(0, 0), (2, 1)]);
        let target = UserItems::from_pairs(3, &[(0, 1), (1, 0), (1, 2), (2, 0)]);
        let t = without_cold_users(&target, &train);
        assert_eq!(t.get(0), &[1]);
        assert!(t.get(1).is_empty(), "user 1 has no train interaction");
        assert_eq!(t.get(2), &[0]);
        assert_eq!(t.nnz(), 2);
    }

    #[test]
    fn evaluation_leaves_cold_start_users_out() {
        // user 2 occurs only in valid/test: it is not in the metrics' denominator
        let data = Interactions {
            n_users: 3,
            n_items: 4,
            train: vec![(0, 0), (1, 1)],
            valid: vec![(0, 2), (1, 3), (2, 1)],
            test: vec![(0, 3), (1, 2), (2, 0)],
        };
        let mut rng = StdRng::seed_from_u64(1);
        let m = super::super::mf::MfBpr::new(3, 4, 4, 0.0, candle_core::DType::F32, &mut rng).unwrap();
        for split in [Split::Valid, Split::Test] {
            let r = evaluate_model(&m, &data, split, &[2], 16).unwrap();
            assert_eq!(r.n_users, 2, "{split:?}");
        }
    }

    /// MG on a store with one batch per epoch: with `first_step` 0 every epoch (MMRec's batch
    /// index) every step is a mirror step; counting across epochs mirrors one step in `beta`.
    #[test]
    fn mg_schedule_per_epoch_index_vs_steps_across_epochs() {
        use super::super::optim::{build, OptimKind, OptimParams};
        let train = vec![(0u32, 0u32), (0, 1), (1, 2), (1, 3), (2, 0)];
        let ui = UserItems::from_pairs(3, &train);
        let sampler = NegativeSampler::new(5, &ui, Negatives::Train).unwrap();
        let p = OptimParams { beta: 3, ..OptimParams::default() };
        let evals = |across: bool| {
            let mut rng = StdRng::seed_from_u64(7);
            let mut m = super::super::mf::MfBpr::new(3, 5, 4, 1e-4, candle_core::DType::F32, &mut rng).unwrap();
            let mut opt = build(OptimKind::Mg, &p, m.named_vars()).unwrap();
            for e in 0..6usize {
                // one batch per epoch: the steps before epoch e are e
                let first = if across { e } else { 0 };
                train_epoch(&mut m, &mut opt, &sampler, &train, 2048, first, &mut epoch_rng(1, e), &mut None).unwrap();
            }
            opt.grad_evals()
        };
        // mirror step = 2 gradient evaluations, plain step = 1
        assert_eq!(evals(false), 12, "reference: every one-batch epoch is a mirror step");
        assert_eq!(evals(true), 2 + 1 + 1 + 2 + 1 + 1, "across epochs: steps 0 and 3 mirror");
    }
}
