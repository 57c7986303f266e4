//! `bench train`: optimisers x seeds on one data set in one process; a table of test metrics,
//! epochs, time per epoch / evaluation, cost relative to the baseline, peak RSS, and the
//! PyTorch MMRec anchors measured on the same kind of machine (constants, labelled as such).
//! With `profile`, only the parts of one training step and one evaluation are timed.

use crate::config::{Config, LearnConfig};
use crate::learn::data::Interactions;
use crate::learn::dataset::DataSource;
use crate::learn::model::{Batch, ModelKind, Recommender};
use crate::learn::optim::{OptimName, Optimizer};
use crate::learn::sampler::{NegativeSampler, Negatives};
use crate::learn::trainer::{self, TrainReport};
use crate::learn::{LearnError, Result};
use candle_core::Device;
use rand::SeedableRng;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// What `bench train` compares (the command line fills it from its flags).
#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    /// The appliance configuration; its `learn` section is the base of every run (the optimiser
    /// and the seed are replaced per run).
    pub config: Config,
    pub data: DataSource,
    /// Optimisers to compare; the first is the baseline of the cost ratio.
    pub optims: Vec<OptimName>,
    /// Seeds per optimiser: `seed`, `seed + 1`, ...
    pub seeds: u64,
    pub seed: u64,
    /// Only time the parts of one step and one evaluation (no training).
    pub profile: bool,
    /// The command line, quoted under the table's heading.
    pub command: String,
}

/// What `bench train` returns: the runs' table, or with `profile` the timed parts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TrainBenchReport {
    Runs(TrainBenchRuns),
    Profile(TrainBenchProfile),
}

/// Every optimiser's runs and what the table's heading names.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchRuns {
    /// The `.inter` file (or the store's database).
    pub data: String,
    /// Its file stem (baby, tiktok, ...), which picks the PyTorch anchors.
    pub dataset: String,
    pub model: ModelKind,
    pub seeds: u64,
    pub first_seed: u64,
    /// Epoch cap and early-stopping patience of every run.
    pub epochs: usize,
    pub patience: usize,
    /// The negative pool of every run.
    pub negatives: Negatives,
    pub command: String,
    /// One entry per optimiser, in the order compared (the first is the cost baseline).
    pub runs: Vec<OptimRuns>,
}

/// One optimiser's runs, one report per seed.
#[derive(Debug, Clone, Serialize)]
pub struct OptimRuns {
    pub optim: OptimName,
    /// The optimiser as the table names it (`sgbd-s1`, ...).
    pub label: String,
    pub reports: Vec<TrainReport>,
}

/// `profile`: the timed parts of one step and one evaluation, per optimiser.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchProfile {
    pub data: String,
    pub model: ModelKind,
    pub optims: Vec<OptimProfile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OptimProfile {
    pub label: String,
    pub parts: Vec<ProfilePart>,
}

/// One timed part: wall and CPU milliseconds, averaged over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct ProfilePart {
    pub part: String,
    pub wall_ms: f64,
    pub cpu_ms: f64,
}

/// The optimiser's label with the base configuration's variant (`sgbd` -> `sgbd-s1`).
fn label(base: &LearnConfig, optim: OptimName) -> String {
    trainer::optim_from_config(&LearnConfig { optim, ..base.clone() }).0.label().to_string()
}

/// Runs the benchmark: loads the data, then each optimiser with each seed (or, with `profile`,
/// times the parts). Progress goes to stderr.
pub fn run(o: &TrainBenchOptions) -> Result<TrainBenchReport> {
    let base = o.config.learn.clone();
    let d = crate::learn::dataset::load(&o.data, &o.config, &base)?;
    let (inter, feats) = (&d.inter, &d.features);
    for (f, m) in d.feature_files.iter().zip(feats) {
        eprintln!("features {}: {} items x {}", f.display(), m.n_items, m.dim);
    }
    let dataset = d.path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    eprintln!(
        "data {}: {} users, {} items, {} train pairs",
        d.path.display(),
        inter.n_users,
        inter.n_items,
        inter.train.len()
    );
    if o.profile {
        let mut optims = vec![];
        for &optim in &o.optims {
            let cfg = LearnConfig { optim, ..base.clone() };
            let (kind, params) = trainer::optim_from_config(&cfg);
            // the model build: for FREEDOM the kNN item graph of every modality
            let (w, c) = (Instant::now(), crate::sys::process_cpu_seconds());
            let model = trainer::build_model(&cfg, inter, feats)?;
            let mut parts = vec![ProfilePart {
                part: "model build (FREEDOM: kNN item graph)".into(),
                wall_ms: w.elapsed().as_secs_f64() * 1e3,
                cpu_ms: (crate::sys::process_cpu_seconds() - c) * 1e3,
            }];
            let mut opt = crate::learn::optim::build(kind, &params, model.named_vars())?;
            parts.extend(profile_parts(model.as_ref(), &mut opt, inter, cfg.batch, cfg.eval_block, cfg.negatives, 10)?);
            optims.push(OptimProfile { label: kind.label().to_string(), parts });
        }
        return Ok(TrainBenchReport::Profile(TrainBenchProfile {
            data: d.path.display().to_string(),
            model: base.model,
            optims,
        }));
    }
    let mut runs = vec![];
    for &optim in &o.optims {
        let mut reports = vec![];
        for s in 0..o.seeds {
            let cfg = LearnConfig { optim, seed: o.seed + s, ..base.clone() };
            let (kind, _) = trainer::optim_from_config(&cfg);
            eprintln!("== {:?} {} seed {}", cfg.model, kind.label(), cfg.seed);
            let mut on_epoch = |e: &trainer::EpochRecord| {
                tracing::info!(
                    epoch = e.epoch,
                    loss = e.loss,
                    valid_r20 = e.valid.recall_at(20),
                    train_s = e.train_s,
                    eval_s = e.eval_s,
                    "epoch"
                );
            };
            let hooks = trainer::Hooks { on_epoch: Some(&mut on_epoch), on_batch: None };
            let r = trainer::run(&cfg, inter, feats, None, hooks)?;
            eprint!("{r}");
            reports.push(r);
        }
        runs.push(OptimRuns { optim, label: label(&base, optim), reports });
    }
    Ok(TrainBenchReport::Runs(TrainBenchRuns {
        data: d.path.display().to_string(),
        dataset,
        model: base.model,
        seeds: o.seeds,
        first_seed: o.seed,
        epochs: base.epochs,
        patience: base.patience,
        negatives: base.negatives,
        command: o.command.clone(),
        runs,
    }))
}

/// Mean and sample standard deviation (NaN for no values, sd 0 for one).
pub(crate) fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (m, sd)
}

/// Mean and sample standard deviation of `f` over the reports.
fn stat(rs: &[TrainReport], f: impl Fn(&TrainReport) -> f64) -> (f64, f64) {
    mean_sd(&rs.iter().map(f).collect::<Vec<_>>())
}

impl TrainBenchRuns {
    /// Appends the table (with its heading and command line) to a Markdown file.
    pub fn append_markdown(&self, path: &Path) -> Result<()> {
        let io = |source| LearnError::Io { path: path.to_path_buf(), source };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        f.write_all(self.to_string().as_bytes()).map_err(io)
    }
}

/// The Markdown table: mean ± sd over the seeds per optimiser, cost against the first, and the
/// PyTorch anchors for this model and data set.
impl std::fmt::Display for TrainBenchRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = |g: &dyn Fn(&TrainReport) -> f64| self.runs.first().map_or(f64::NAN, |r| stat(&r.reports, g).0);
        let base_epoch = first(&|r| r.train_s_per_epoch);
        let base_cpu = first(&|r| r.train_cpu_s_per_epoch);
        write!(
            f,
            "\n### {:?} on {} ({} seeds from {}, epochs cap {}, patience {}, negatives from {} items)\n\n`{}`\n\n",
            self.model,
            self.dataset,
            self.seeds,
            self.first_seed,
            self.epochs,
            self.patience,
            match self.negatives {
                Negatives::Train => "train",
                Negatives::All => "all",
            },
            self.command
        )?;
        f.write_str("| optimiser | test R@20 | test N@20 | epochs | best epoch | train s/epoch | CPU s/epoch | s/eval | cost vs first (wall / CPU) | time to best s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|\n")?;
        for OptimRuns { label, reports: rs, .. } in &self.runs {
            let r20 = stat(rs, |r| r.test.as_ref().map_or(f64::NAN, |t| t.recall_at(20)));
            let n20 = stat(rs, |r| r.test.as_ref().map_or(f64::NAN, |t| t.ndcg_at(20)));
            let ep = stat(rs, |r| r.epochs_run as f64);
            let be = stat(rs, |r| r.best_epoch.map_or(f64::NAN, |b| b as f64));
            let tr = stat(rs, |r| r.train_s_per_epoch);
            let cpu = stat(rs, |r| r.train_cpu_s_per_epoch);
            let ev = stat(rs, |r| r.eval_s_per_pass);
            let ttb = stat(rs, |r| r.time_to_best_s);
            let rss = rs.iter().filter_map(|r| r.peak_rss_bytes).max().map_or(f64::NAN, |b| b as f64 / 1e6);
            writeln!(
                f,
                "| {label} | {:.4} ± {:.4} | {:.4} ± {:.4} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2}x / {:.2}x | {:.0} | {:.0} |",
                r20.0, r20.1, n20.0, n20.1, ep.0, be.0, tr.0, cpu.0, ev.0, tr.0 / base_epoch, cpu.0 / base_cpu, ttb.0, rss
            )?;
        }
        let anchors = anchors(self.model, &self.dataset);
        if !anchors.is_empty() {
            f.write_str("\nPyTorch MMRec anchors (measured-anchors.md, same data, 2 threads; constants, not measured in this run):\n\n| PyTorch run | test R@20 | test N@20 | best epoch | train s/epoch | s/eval | peak RSS MB | ours/PyTorch s/epoch (first row) | ours/PyTorch s/eval |\n|---|---|---|---|---|---|---|---|---|\n")?;
            let ev0 = first(&|r| r.eval_s_per_pass);
            for an in anchors {
                writeln!(
                    f,
                    "| {} | {:.4} | {:.4} | {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} |",
                    an.label,
                    an.test_r20,
                    an.test_n20,
                    an.best_epoch,
                    an.train_s_per_epoch,
                    an.eval_s,
                    an.peak_rss_mb,
                    base_epoch / an.train_s_per_epoch,
                    ev0 / an.eval_s
                )?;
            }
        }
        Ok(())
    }
}

/// Per optimiser: each part's wall and CPU milliseconds.
impl std::fmt::Display for TrainBenchProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for o in &self.optims {
            writeln!(f, "\n{:?} + {}: part | wall ms | CPU ms", self.model, o.label)?;
            for p in &o.parts {
                writeln!(f, "  {:<36} {:>9.2} {:>9.2}", p.part, p.wall_ms, p.cpu_ms)?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for TrainBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainBenchReport::Runs(r) => r.fmt(f),
            TrainBenchReport::Profile(p) => p.fmt(f),
        }
    }
}

impl super::Report for TrainBenchReport {}

/// Wall and CPU milliseconds of `f`, averaged over `reps`.
fn time<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, f64)> {
    let (w, c) = (Instant::now(), crate::sys::process_cpu_seconds());
    for _ in 0..reps {
        f()?;
    }
    let n = reps.max(1) as f64;
    Ok((w.elapsed().as_secs_f64() * 1e3 / n, (crate::sys::process_cpu_seconds() - c) * 1e3 / n))
}

/// Times the parts of one training step and one evaluation (wall ms, CPU ms).
pub fn profile_parts(
    model: &dyn Recommender,
    opt: &mut dyn Optimizer,
    data: &Interactions,
    batch: usize,
    eval_block: usize,
    negatives: Negatives,
    reps: usize,
) -> Result<Vec<ProfilePart>> {
    let train_ui = data.train_by_user();
    let valid_ui = data.valid_by_user();
    let sampler = NegativeSampler::new(data.n_items, &train_ui, negatives)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut out = vec![];
    let (w, c) = time(reps, || sampler.epoch(&data.train, batch, &mut rng))?;
    out.push(("negative sampling, one epoch".to_string(), w, c));
    let b = sampler.epoch(&data.train, batch, &mut rng)?.remove(0);
    let b = Batch::from_vecs(b.users, b.pos, b.neg, &Device::Cpu)?;
    {
        use crate::learn::sparse::{normalized_bipartite, SparseOp};
        let a = SparseOp::symmetric(std::sync::Arc::new(normalized_bipartite(data.n_users, data.n_items, &data.train)));
        let x = candle_core::Var::from_tensor(&candle_core::Tensor::randn(
            0f32,
            0.1,
            (data.n_users + data.n_items, 64),
            &Device::Cpu,
        )?)?;
        let (w, c) = time(reps, || Ok(a.apply(x.as_tensor())?))?;
        out.push(("spmm A x (d 64)".into(), w, c));
        let (w, c) = time(reps, || Ok(a.propagate_mean(x.as_tensor(), 2)?))?;
        out.push(("propagate_mean, 2 layers".into(), w, c));
        let (w, c) = time(reps, || Ok(a.propagate_mean(x.as_tensor(), 2)?.sum_all()?.backward()?))?;
        out.push(("propagate_mean fwd + bwd".into(), w, c));
        let g = x.as_tensor().ones_like()?;
        let vars = vec![x.clone()];
        let mut adam = crate::learn::optim::Adam::new(&vars, 1e-3, 0.9, 0.999, 1e-8)?;
        let (w, c) =
            time(reps, || crate::learn::optim::BaseOptimizer::apply(&mut adam, &vars, std::slice::from_ref(&g), 1.0))?;
        out.push(("adam update of a table this size".into(), w, c));
    }
    let (w, c) = time(reps, || model.embeddings())?;
    out.push(("propagation (embeddings)".into(), w, c));
    let (w, c) = time(reps, || model.batch_loss(&b))?;
    out.push(("batch loss forward".into(), w, c));
    let (w, c) = time(reps, || {
        let lg = model.loss_and_grads(&b)?;
        match lg.grads {
            Some(g) => Ok(g.len()),
            None => Ok(lg.loss.backward().map(|_| 1)?),
        }
    })?;
    out.push(("batch loss and gradients (as training)".into(), w, c));
    let mut k = 1usize; // not a mirror batch for beta > 1
    let (w, c) = time(reps, || {
        k += 1;
        opt.step_with(&mut || model.loss_and_grads(&b), k)
    })?;
    out.push((format!("optimiser step ({})", opt.kind().label()), w, c));
    let (u, i) = model.embeddings()?;
    let it = i.t()?.contiguous()?;
    let (w, c) = time(reps.div_ceil(4), || {
        for s in (0..data.n_users).step_by(eval_block.max(1)) {
            let n = eval_block.max(1).min(data.n_users - s);
            u.narrow(0, s, n)?.matmul(&it)?;
        }
        Ok(())
    })?;
    out.push(("evaluation: score matmuls only".into(), w, c));
    let (w, c) = time(reps.div_ceil(4), || {
        let (u, i) = model.embeddings()?;
        crate::learn::eval::evaluate(&u, &i, &train_ui, &valid_ui, &[5, 10, 20], eval_block)
    })?;
    out.push(("full evaluation (valid)".into(), w, c));
    Ok(out.into_iter().map(|(part, wall_ms, cpu_ms)| ProfilePart { part, wall_ms, cpu_ms }).collect())
}

/// A PyTorch MMRec reference run (from `measured-anchors.md`; not measured by this binary).
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    pub label: &'static str,
    pub test_r20: f64,
    pub test_n20: f64,
    pub best_epoch: usize,
    pub train_s_per_epoch: f64,
    pub eval_s: f64,
    pub peak_rss_mb: f64,
    pub wall_s: f64,
}

const ANCHORS: &[(&str, &str, Anchor)] = &[
    (
        "lightgcn",
        "baby",
        Anchor {
            label: "PyTorch LightGCN Baby",
            test_r20: 0.0756,
            test_n20: 0.0321,
            best_epoch: 61,
            train_s_per_epoch: 3.07,
            eval_s: 2.83,
            peak_rss_mb: 1320.0,
            wall_s: 706.0,
        },
    ),
    (
        "lightgcn",
        "baby",
        Anchor {
            label: "PyTorch LightGCN Baby + MG",
            test_r20: 0.0760,
            test_n20: 0.0319,
            best_epoch: 63,
            train_s_per_epoch: 4.07,
            eval_s: 2.82,
            peak_rss_mb: 1350.0,
            wall_s: 785.0,
        },
    ),
    (
        "freedom",
        "tiktok",
        Anchor {
            label: "PyTorch FREEDOM TikTok",
            test_r20: 0.0880,
            test_n20: 0.0388,
            best_epoch: 57,
            train_s_per_epoch: 1.07,
            eval_s: 0.43,
            peak_rss_mb: 1170.0,
            wall_s: 191.0,
        },
    ),
    (
        "freedom",
        "tiktok",
        Anchor {
            label: "PyTorch FREEDOM TikTok + MG",
            test_r20: 0.0877,
            test_n20: 0.0395,
            best_epoch: 54,
            train_s_per_epoch: 1.49,
            eval_s: 0.44,
            peak_rss_mb: 1160.0,
            wall_s: 218.0,
        },
    ),
    (
        "vbpr",
        "tiktok",
        Anchor {
            label: "PyTorch VBPR TikTok",
            test_r20: 0.0214,
            test_n20: 0.0084,
            best_epoch: 58,
            train_s_per_epoch: 0.53,
            eval_s: 0.44,
            peak_rss_mb: 1080.0,
            wall_s: 153.0,
        },
    ),
    (
        "vbpr",
        "tiktok",
        Anchor {
            label: "PyTorch VBPR TikTok + MG",
            test_r20: 0.0216,
            test_n20: 0.0084,
            best_epoch: 56,
            train_s_per_epoch: 0.57,
            eval_s: 0.43,
            peak_rss_mb: 1080.0,
            wall_s: 151.0,
        },
    ),
];

/// The anchors for a model on a data set (`dataset` is the `.inter` file stem: baby, tiktok, ...).
pub fn anchors(model: crate::learn::model::ModelKind, dataset: &str) -> Vec<Anchor> {
    let m = format!("{model:?}").to_ascii_lowercase();
    ANCHORS.iter().filter(|(am, ad, _)| *am == m && *ad == dataset).map(|(_, _, a)| *a).collect()
}
