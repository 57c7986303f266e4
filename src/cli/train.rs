//! `train` (owned by the learn concern): train a recommender on MMRec-format data and report.
use crate::bench::train::TrainBenchOptions;
use crate::config::LearnConfig;
use crate::learn::dataset::DataSource;
use crate::learn::model::ModelKind;
use crate::learn::optim::{OptimName, Variant as SgbdVariant};
use crate::learn::sampler::Negatives;
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
    /// Negative pool: train (MMRec's rule, the default: items that occur in train) or all (every item).
    #[arg(long)]
    pub negatives: Option<Negatives>,
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
    /// Where training runs: cpu, cuda or auto (`learn.device`; cuda needs a `--features cuda` build).
    #[arg(long)]
    pub device: Option<crate::device::DevicePref>,
}

impl HyperArgs {
    pub fn apply(&self, c: &mut LearnConfig) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(
            model, variant, epochs, patience, negatives, batch, lr, dim, layers, reg, rho, alpha1, alpha2, beta,
            eval_block, dropout, mm_lambda, device
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
    let hooks = trainer::Hooks { on_epoch: Some(&mut on_epoch), on_batch: Some(&mut on_batch) };
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

impl BenchTrainArgs {
    /// The library's options: the configuration (logging initialised) with the hyper-parameter
    /// flags applied to its `[learn]` section.
    pub fn options(&self) -> anyhow::Result<TrainBenchOptions> {
        let mut config = super::load_config(&self.config)?;
        self.hyper.apply(&mut config.learn);
        Ok(TrainBenchOptions {
            config,
            data: self.data.source(),
            optims: self.optims.clone(),
            seeds: self.seeds,
            seed: self.seed,
            profile: self.profile,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        })
    }
}
