//! The training loop: per epoch, shuffle the train pairs and draw negatives, one optimiser step
//! per batch, then a full-ranking evaluation on valid; early stopping on valid Recall@`valid_k`
//! with patience; test metrics are computed whenever valid improves, so the report holds the
//! test metrics of the best-valid epoch. Optional checkpoint after every epoch (and resume).

use super::checkpoint;
use super::data::Interactions;
use super::eval::{evaluate, RankMetrics};
use super::model::{Batch, ModelKind, Recommender};
use super::optim::{OptimKind, OptimParams, Optimizer};
use super::sampler::NegativeSampler;
use super::{LearnError, Result};
use crate::config::LearnConfig;
use candle_core::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainOptions {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Stop after this many epochs without a better valid Recall@`valid_k` (0 = never stop early).
    pub patience: usize,
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

/// Runs one epoch of training; returns the mean batch loss.
pub fn train_epoch(
    model: &mut dyn Recommender,
    opt: &mut dyn Optimizer,
    sampler: &NegativeSampler,
    train: &[(u32, u32)],
    batch: usize,
    rng: &mut StdRng,
    on_batch: &mut Option<&mut dyn FnMut(usize, usize)>,
) -> Result<f64> {
    model.on_epoch_start(rng)?;
    let batches = sampler.epoch(train, batch, rng)?;
    let n = batches.len();
    let mut sum = 0f64;
    let dev = Device::Cpu;
    for (k, b) in batches.into_iter().enumerate() {
        let b = Batch::from_vecs(b.users, b.pos, b.neg, &dev)?;
        // the step runs on a rayon worker: its parallel loops split there directly instead of
        // being injected into the pool (and waited for) from this thread, loop after loop
        let (model_w, opt_w) = (&mut *model, &mut *opt);
        let loss = rayon::scope(move |_| {
            let m: &dyn Recommender = model_w;
            opt_w.step_with(&mut || m.loss_and_grads(&b), k)
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
    let valid_ui = data.valid_by_user();
    let test_ui = data.test_by_user();
    let sampler = NegativeSampler::new(data.n_items, &train_ui)?;
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
    let mut stopped_early = opts.patience > 0 && r.bad_epochs >= opts.patience;

    for epoch in first_epoch..opts.epochs {
        if stopped_early {
            break;
        }
        let mut rng = epoch_rng(opts.seed, epoch);
        let (t0, c0) = (Instant::now(), crate::sys::process_cpu_seconds());
        let loss = train_epoch(model, opt, &sampler, &data.train, opts.batch, &mut rng, &mut hooks.on_batch)?;
        let (train_s, c1) = (t0.elapsed().as_secs_f64(), crate::sys::process_cpu_seconds());
        let t1 = Instant::now();
        let (u, i) = model.embeddings()?;
        let valid = evaluate(&u, &i, &train_ui, &valid_ui, &ks, opts.eval_block)?;
        let (eval_s, eval_cpu_s) = (t1.elapsed().as_secs_f64(), crate::sys::process_cpu_seconds() - c1);
        let train_cpu_s = c1 - c0;
        let cur = valid.recall_at(opts.valid_k);
        let improved = r.best_valid.as_ref().is_none_or(|b| cur > b.recall_at(opts.valid_k));
        let mut test_eval_s = 0.0;
        if improved {
            let t2 = Instant::now();
            r.test = Some(evaluate(&u, &i, &train_ui, &test_ui, &ks, opts.eval_block)?);
            test_eval_s = t2.elapsed().as_secs_f64();
            r.best_valid = Some(valid.clone());
            r.best_epoch = Some(epoch);
            r.bad_epochs = 0;
            r.time_to_best_s = base_elapsed + start.elapsed().as_secs_f64();
        } else {
            r.bad_epochs += 1;
        }
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
        stopped_early = opts.patience > 0 && r.bad_epochs >= opts.patience;
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
        batch: cfg.batch,
        seed: cfg.seed,
        eval_block: cfg.eval_block,
        checkpoint,
        ..TrainOptions::default()
    }
}

/// Item feature matrices for the multimodal models (one per modality, rows = items).
pub type Features = Vec<super::npy::Modality>;

/// Builds the model of `cfg` for `data` (f32), initialised from `cfg.seed`.
pub fn build_model(cfg: &LearnConfig, data: &Interactions, features: &Features) -> Result<Box<dyn Recommender>> {
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
/// items are *not* masked when testing).
pub fn evaluate_model(
    model: &dyn Recommender,
    data: &Interactions,
    split: Split,
    ks: &[usize],
    block: usize,
) -> Result<RankMetrics> {
    let (u, i) = model.embeddings()?;
    let target = match split {
        Split::Valid => data.valid_by_user(),
        Split::Test => data.test_by_user(),
    };
    evaluate(&u, &i, &data.train_by_user(), &target, ks, block)
}
