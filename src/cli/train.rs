//! `train` (owned by the learn concern): train a recommender on MMRec-format data and report.
use crate::config::LearnConfig;
use crate::learn::dataset::DataSource;
use crate::learn::model::ModelKind;
use crate::learn::optim::{OptimName, Variant as SgbdVariant};
use crate::learn::trainer;
use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Data and hyper-parameter flags shared by `train` and `bench train`.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// A `.inter` file, or a folder holding one (with its feature files).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Data set name under $SGBD_DATA: baby, tiktok or hm (used when --data is absent).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Item feature files (.npy), comma separated, for vbpr / freedom.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<PathBuf>,
    /// Train on the store's interactions table (the configured database) with a per-user time
    /// split (`learn.valid_per_user` / `learn.test_per_user`) instead of a `.inter` file.
    #[arg(long, conflicts_with_all = ["data", "dataset"])]
    pub from_store: bool,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct HyperArgs {
    #[arg(long)]
    pub model: Option<ModelKind>,
    #[arg(long)]
    pub variant: Option<SgbdVariant>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub patience: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub dim: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub reg: Option<f64>,
    #[arg(long)]
    pub rho: Option<f64>,
    #[arg(long)]
    pub alpha1: Option<f64>,
    #[arg(long)]
    pub alpha2: Option<f64>,
    #[arg(long)]
    pub beta: Option<usize>,
    #[arg(long)]
    pub eval_block: Option<usize>,
    /// FREEDOM edge dropout.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// FREEDOM modality-loss weight.
    #[arg(long)]
    pub mm_lambda: Option<f64>,
}

impl HyperArgs {
    pub fn apply(&self, c: &mut LearnConfig) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(
            model, variant, epochs, patience, batch, lr, dim, layers, reg, rho, alpha1, alpha2, beta, eval_block,
            dropout, mm_lambda
        );
    }
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// adam, sam, mg or sgbd.
    #[arg(long)]
    pub optim: Option<OptimName>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Checkpoint folder (saved every epoch; an existing checkpoint there is resumed).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

impl DataArgs {
    /// The library's description of the same data.
    pub fn source(&self) -> DataSource {
        DataSource {
            data: self.data.clone(),
            dataset: self.dataset.clone(),
            features: self.features.clone(),
            from_store: self.from_store,
        }
    }
}

pub fn run(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let cfg_all = super::load_config(&a.config)?;
    let mut cfg = cfg_all.learn.clone();
    a.hyper.apply(&mut cfg);
    if let Some(o) = a.optim {
        cfg.optim = o;
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    let mut issues = crate::config::Issues::default();
    crate::config::Validate::validate(&cfg, &mut issues);
    if !issues.0.is_empty() {
        let msgs: Vec<String> = issues.0.iter().map(|i| i.to_string()).collect();
        anyhow::bail!("bad training settings: {}", msgs.join("; "));
    }
    let d = crate::learn::dataset::load(&a.data.source(), &cfg_all, &cfg)?;
    for (f, m) in d.feature_files.iter().zip(&d.features) {
        println!("features {}: {} items x {}", f.display(), m.n_items, m.dim);
    }
    let (path, inter, feats) = (d.path, d.inter, d.features);
    println!(
        "data {}: {} users, {} items, train {} / valid {} / test {}",
        path.display(),
        inter.n_users,
        inter.n_items,
        inter.train.len(),
        inter.valid.len(),
        inter.test.len()
    );
    let (kind, _) = trainer::optim_from_config(&cfg);
    println!("model {:?}, optimiser {}, seed {}", cfg.model, kind.label(), cfg.seed);
    let tty = std::io::stderr().is_terminal();
    let mut on_batch = |k: usize, n: usize| {
        if tty {
            eprint!("\r  batch {k}/{n}   ");
            let _ = std::io::stderr().flush();
        }
    };
    let mut on_epoch = |e: &trainer::EpochRecord| {
        if tty {
            eprint!("\r                      \r");
        }
        println!(
            "epoch {:>3}  loss {:.5}  valid R@20 {:.4}  N@20 {:.4}  train {:.2}s  eval {:.2}s{}",
            e.epoch,
            e.loss,
            e.valid.recall_at(20),
            e.valid.ndcg_at(20),
            e.train_s,
            e.eval_s,
            if e.improved { "  *" } else { "" }
        );
    };
    let hooks = trainer::Hooks {
        on_epoch: Some(&mut on_epoch),
        on_batch: Some(&mut on_batch),
    };
    let report = trainer::run(&cfg, &inter, &feats, a.checkpoint.clone(), hooks)?;
    print!("{report}");
    if let Some(p) = &a.report {
        let json = serde_json::json!({
            "data": path.display().to_string(),
            "n_users": inter.n_users, "n_items": inter.n_items,
            "config": cfg,
            "report": report,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&json)?).with_context(|| format!("writing {}", p.display()))?;
        println!("report written to {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Optimisers to compare; the first is the baseline of the cost ratio.
    #[arg(long, value_delimiter = ',', default_value = "adam,mg,sam,sgbd")]
    pub optims: Vec<OptimName>,
    /// Number of seeds per optimiser (first seed from --seed, then +1, +2, ...).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    #[arg(long, default_value_t = 999)]
    pub seed: u64,
    /// Write all reports as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Append the table (with the command line) to this Markdown file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Only time the parts of one step and one evaluation (no training).
    #[arg(long)]
    pub profile: bool,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

pub fn bench(a: BenchTrainArgs) -> anyhow::Result<ExitCode> {
    let cfg_all = super::load_config(&a.config)?;
    let mut base = cfg_all.learn.clone();
    a.hyper.apply(&mut base);
    let d = crate::learn::dataset::load(&a.data.source(), &cfg_all, &base)?;
    for (f, m) in d.feature_files.iter().zip(&d.features) {
        println!("features {}: {} items x {}", f.display(), m.n_items, m.dim);
    }
    let (path, inter, feats) = (d.path, d.inter, d.features);
    let dataset = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    println!(
        "data {}: {} users, {} items, {} train pairs",
        path.display(),
        inter.n_users,
        inter.n_items,
        inter.train.len()
    );
    if a.profile {
        for &o in &a.optims {
            let mut cfg = base.clone();
            cfg.optim = o;
            let (kind, params) = trainer::optim_from_config(&cfg);
            let model = trainer::build_model(&cfg, &inter, &feats)?;
            let mut opt = crate::learn::optim::build(kind, &params, model.named_vars())?;
            println!("\n{:?} + {}: part | wall ms | CPU ms", cfg.model, kind.label());
            for (name, w, c) in crate::bench::train::profile_parts(model.as_ref(), &mut opt, &inter, cfg.batch, cfg.eval_block, 10)? {
                println!("  {name:<36} {w:>9.2} {c:>9.2}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![];
    let mut all = vec![];
    for &o in &a.optims {
        let mut reports = vec![];
        for s in 0..a.seeds {
            let mut cfg = base.clone();
            cfg.optim = o;
            cfg.seed = a.seed + s;
            let (kind, _) = trainer::optim_from_config(&cfg);
            println!("== {:?} {} seed {}", cfg.model, kind.label(), cfg.seed);
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
            let hooks = trainer::Hooks {
                on_epoch: Some(&mut on_epoch),
                on_batch: None,
            };
            let r = trainer::run(&cfg, &inter, &feats, None, hooks)?;
            print!("{r}");
            reports.push(r);
        }
        let label = trainer::optim_from_config(&LearnConfig {
            optim: o,
            ..base.clone()
        })
        .0
        .label();
        rows.push((label, reports.clone()));
        all.push(serde_json::json!({ "optim": o, "reports": reports }));
    }
    let get = |rs: &[trainer::TrainReport], f: &dyn Fn(&trainer::TrainReport) -> f64| {
        mean_sd(&rs.iter().map(f).collect::<Vec<_>>())
    };
    let base_epoch = rows
        .first()
        .map(|(_, r)| get(r, &|r| r.train_s_per_epoch).0)
        .unwrap_or(f64::NAN);
    let base_cpu = rows
        .first()
        .map(|(_, r)| get(r, &|r| r.train_cpu_s_per_epoch).0)
        .unwrap_or(f64::NAN);
    let mut md = String::new();
    md.push_str(&format!(
        "\n### {:?} on {} ({} seeds from {}, epochs cap {}, patience {})\n\n`{}`\n\n",
        base.model,
        dataset,
        a.seeds,
        a.seed,
        base.epochs,
        base.patience,
        std::env::args().collect::<Vec<_>>().join(" ")
    ));
    md.push_str("| optimiser | test R@20 | test N@20 | epochs | best epoch | train s/epoch | CPU s/epoch | s/eval | cost vs first (wall / CPU) | time to best s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (label, rs) in &rows {
        let r20 = get(rs, &|r| r.test.as_ref().map_or(f64::NAN, |t| t.recall_at(20)));
        let n20 = get(rs, &|r| r.test.as_ref().map_or(f64::NAN, |t| t.ndcg_at(20)));
        let ep = get(rs, &|r| r.epochs_run as f64);
        let be = get(rs, &|r| r.best_epoch.map_or(f64::NAN, |b| b as f64));
        let tr = get(rs, &|r| r.train_s_per_epoch);
        let cpu = get(rs, &|r| r.train_cpu_s_per_epoch);
        let ev = get(rs, &|r| r.eval_s_per_pass);
        let ttb = get(rs, &|r| r.time_to_best_s);
        let rss = rs
            .iter()
            .filter_map(|r| r.peak_rss_bytes)
            .max()
            .map_or(f64::NAN, |b| b as f64 / 1e6);
        md.push_str(&format!(
            "| {label} | {:.4} ± {:.4} | {:.4} ± {:.4} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2}x / {:.2}x | {:.0} | {:.0} |\n",
            r20.0, r20.1, n20.0, n20.1, ep.0, be.0, tr.0, cpu.0, ev.0, tr.0 / base_epoch, cpu.0 / base_cpu, ttb.0, rss
        ));
    }
    let anchors = crate::bench::train::anchors(base.model, &dataset);
    if !anchors.is_empty() {
        md.push_str("\nPyTorch MMRec anchors (measured-anchors.md, same data, 2 threads; constants, not measured in this run):\n\n| PyTorch run | test R@20 | test N@20 | best epoch | train s/epoch | s/eval | peak RSS MB | ours/PyTorch s/epoch (first row) | ours/PyTorch s/eval |\n|---|---|---|---|---|---|---|---|---|\n");
        let ev0 = rows
            .first()
            .map(|(_, r)| get(r, &|r| r.eval_s_per_pass).0)
            .unwrap_or(f64::NAN);
        for an in anchors {
            md.push_str(&format!(
                "| {} | {:.4} | {:.4} | {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} |\n",
                an.label,
                an.test_r20,
                an.test_n20,
                an.best_epoch,
                an.train_s_per_epoch,
                an.eval_s,
                an.peak_rss_mb,
                base_epoch / an.train_s_per_epoch,
                ev0 / an.eval_s
            ));
        }
    }
    println!("{md}");
    if let Some(p) = &a.json {
        std::fs::write(
            p,
            serde_json::to_vec_pretty(&serde_json::json!({ "data": path.display().to_string(), "runs": all }))?,
        )
        .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.markdown {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("opening {}", p.display()))?;
        f.write_all(md.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
