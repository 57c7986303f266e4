//! `bench robustness`: the paper's claim measured on product data. Catalogue descriptions are
//! corrupted the way real catalogues go wrong ([`crate::denoise::catalog_noise`]) at several
//! rates; each corrupted catalogue's text is embedded with MiniLM twice, as the merchant wrote it
//! (`raw`) and after the denoise pipeline's cleaning (`cleaned`); FREEDOM (or VBPR) is trained on
//! each text feature with each optimiser and seed, and test R@20 / N@20 are tabulated against the
//! noise rate (JSON and an SVG plot). The cleaning runs without BLIP captions (degraded mode, the
//! only one without BLIP weights): it removes what its rules and the near-duplicate check catch,
//! not phrases off the photo's topic.
//!
//! Beside the recommender metrics, the report gives the *text fidelity*: per corruption kind, the
//! mean cosine between a corrupted item's embedding and the same item's uncorrupted one (same
//! text source), i.e. how much of the damage reaches the features.
use super::plot::{line_chart_svg, Line};
use super::train::mean_sd;
use crate::config::Config;
use crate::denoise::catalog_noise::{corrupt_catalog, Corruption};
use crate::denoise::features::{embed_catalog, read_catalog, write_npy, IdMapping, TextMode};
use crate::denoise::{DenoiseError, TextEncoder};
use crate::learn::model::ModelKind;
use crate::learn::npy::Modality;
use crate::learn::optim::OptimName;
use crate::learn::trainer;
use crate::learn::LearnError;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum RobustnessError {
    #[error(transparent)]
    Denoise(#[from] DenoiseError),
    #[error(transparent)]
    Learn(#[from] LearnError),
    #[error("bench robustness: {0}")]
    Invalid(String),
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("plot: {0}")]
    Plot(String),
}

pub type Result<T> = std::result::Result<T, RobustnessError>;

#[derive(clap::Args, Debug, Clone)]
pub struct RobustnessArgs {
    /// Data folder with the catalogue, its `i_id_mapping.csv` (sku -> itemID) and an MMRec `.inter`
    /// file (default: `$SGBD_DATA/hm_sample`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The catalogue CSV inside the data folder (H&M or Myntra columns).
    #[arg(long, default_value = "articles_sample.csv")]
    pub catalog: String,
    /// Noise rates in percent of the items (0 is always run: it is the baseline).
    #[arg(long, value_delimiter = ',', default_value = "0,10,25,50")]
    pub rates: Vec<f64>,
    /// Corruptions dealt out over the corrupted items in turn.
    #[arg(long, value_delimiter = ',', default_value = "boilerplate,wrong-attribute,truncation,foreign")]
    pub kinds: Vec<Corruption>,
    /// Text sources: raw (title. description as written) and cleaned (the denoise pipeline's text).
    #[arg(long, value_delimiter = ',', default_value = "raw,cleaned")]
    pub sources: Vec<TextMode>,
    /// Optimisers (the first is the baseline of the time ratio).
    #[arg(long, value_delimiter = ',', default_value = "adam,mg,sgbd")]
    pub optims: Vec<OptimName>,
    /// Training seeds per cell: --seed, --seed + 1, ...
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    #[arg(long, default_value_t = 999)]
    pub seed: u64,
    /// Seed of the corruption (the same corrupted catalogue for every optimiser and seed).
    #[arg(long, default_value_t = 7)]
    pub noise_seed: u64,
    /// freedom or vbpr.
    #[arg(long, default_value = "freedom")]
    pub model: ModelKind,
    /// Epoch cap (default: the configuration's `learn.epochs`; runs stop early on valid R@20).
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub patience: Option<usize>,
    /// Folder for the text features of each (source, rate) as .npy, reused by later runs with the
    /// same catalogue, encoder, kinds and noise seed.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Write the report as JSON (rewritten after every training run, so a long run can be followed).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the plot (SVG): test R@20 against the noise rate, one line per optimiser and source.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// One training run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub rate: f64,
    pub source: TextMode,
    pub optim: String,
    pub seed: u64,
    pub recall_at_20: f64,
    pub ndcg_at_20: f64,
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
    pub train_s_per_epoch: f64,
    pub time_to_best_s: f64,
}

/// Mean and sample sd over the seeds of one (source, optimiser, rate).
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub source: TextMode,
    pub optim: String,
    pub rate: f64,
    pub seeds: usize,
    pub recall_mean: f64,
    pub recall_sd: f64,
    pub ndcg_mean: f64,
    pub ndcg_sd: f64,
    /// Relative change of the mean R@20 from rate 0 (same source and optimiser).
    pub recall_change: f64,
}

/// How close corrupted items' text features stay to their uncorrupted ones.
#[derive(Debug, Clone, Serialize)]
pub struct Fidelity {
    pub source: TextMode,
    pub rate: f64,
    pub kind: Corruption,
    pub items: usize,
    /// Mean cosine to the same item's embedding at rate 0 (1 = the damage never reached it).
    pub mean_cosine: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RobustnessReport {
    pub data: String,
    pub model: ModelKind,
    pub users: usize,
    pub items: usize,
    pub train_pairs: usize,
    pub encoder: String,
    /// Always true here: no BLIP captions, so the cleaning runs on its rules alone.
    pub degraded_cleaning: bool,
    pub kinds: Vec<Corruption>,
    pub rates: Vec<f64>,
    pub noise_seed: u64,
    pub epochs: usize,
    pub patience: usize,
    pub command: String,
    /// Items changed per rate and kind.
    pub corrupted: BTreeMap<String, BTreeMap<Corruption, usize>>,
    pub fidelity: Vec<Fidelity>,
    pub cells: Vec<Cell>,
    pub runs: Vec<RunRow>,
    /// Seconds spent embedding (all sources and rates) and training (all runs).
    pub embed_s: f64,
    pub train_s: f64,
    pub peak_rss_bytes: Option<u64>,
}

fn rate_key(r: f64) -> String {
    format!("{r}")
}

/// The catalogue's items that the mapping names, the mapping and how many ids it names.
fn load_items(dir: &Path, catalog: &str) -> Result<(Vec<crate::denoise::features::CatalogItem>, IdMapping, usize)> {
    let mapping = IdMapping::read(&dir.join("i_id_mapping.csv"))?;
    let n_ids = mapping.skus().len();
    let images = dir.join("images");
    let items =
        mapping.retain_mapped(read_catalog(&dir.join(catalog), images.is_dir().then_some(images.as_path()), None)?);
    if items.is_empty() {
        return Err(RobustnessError::Invalid(format!(
            "no item of {} is named in {}",
            dir.join(catalog).display(),
            mapping.path().display()
        )));
    }
    Ok((items, mapping, n_ids))
}

/// Embeds the text of `items` (catalogue order), through the cache when given.
fn embed_cached(
    enc: &TextEncoder,
    items: &[crate::denoise::features::CatalogItem],
    mode: TextMode,
    cfg: &Config,
    cache: Option<&Path>,
    key: &str,
) -> Result<Vec<Vec<f32>>> {
    let file = cache.map(|d| d.join(format!("{key}.npy")));
    if let Some(f) = file.as_ref().filter(|f| f.is_file()) {
        let (n, dim, data) = crate::learn::npy::read_features(f)?;
        if n == items.len() && dim == enc.dim() {
            eprintln!("  text features from the cache: {}", f.display());
            return Ok(data.chunks(dim).map(|c| c.to_vec()).collect());
        }
        tracing::warn!(file = %f.display(), rows = n, dim, "cached features of another shape; embedding again");
    }
    let rows = embed_catalog(enc, items, mode, &HashMap::new(), &cfg.denoise)?;
    if let Some(f) = file {
        if let Some(d) = f.parent() {
            std::fs::create_dir_all(d).map_err(|source| RobustnessError::Io { path: d.to_path_buf(), source })?;
        }
        write_npy(&rows, &f)?;
    }
    Ok(rows)
}

/// One cell's runs: source, R@20 and N@20 per seed, rate.
type Group = (TextMode, Vec<f64>, Vec<f64>, f64);

/// Cells (mean ± sd over seeds) of the runs so far, with the change from rate 0; ordered by
/// source (raw first), optimiser label, rate (rates are non-negative, so their bits sort as they do).
fn cells(runs: &[RunRow]) -> Vec<Cell> {
    let mut groups: BTreeMap<(u8, String, u64), Group> = BTreeMap::new();
    for r in runs {
        let g = groups.entry((r.source as u8, r.optim.clone(), r.rate.to_bits())).or_insert((
            r.source,
            vec![],
            vec![],
            r.rate,
        ));
        g.1.push(r.recall_at_20);
        g.2.push(r.ndcg_at_20);
    }
    let base: HashMap<(u8, String), f64> =
        groups.iter().filter(|(_, g)| g.3 == 0.0).map(|((s, o, _), g)| ((*s, o.clone()), mean_sd(&g.1).0)).collect();
    groups
        .into_iter()
        .map(|((s, optim, _), (source, rec, ndcg, rate))| {
            let (recall_mean, recall_sd) = mean_sd(&rec);
            let (ndcg_mean, ndcg_sd) = mean_sd(&ndcg);
            let b = base.get(&(s, optim.clone())).copied().unwrap_or(f64::NAN);
            Cell {
                source,
                optim,
                rate,
                seeds: rec.len(),
                recall_mean,
                recall_sd,
                ndcg_mean,
                ndcg_sd,
                recall_change: recall_mean / b - 1.0,
            }
        })
        .collect()
}

/// Runs the benchmark with the text encoder `enc` (MiniLM on the appliance; tests pass a tiny one).
pub fn run(a: &RobustnessArgs, cfg: &Config, enc: &TextEncoder) -> Result<RobustnessReport> {
    if !matches!(a.model, ModelKind::Freedom | ModelKind::Vbpr) {
        return Err(RobustnessError::Invalid(format!("--model {:?}: text features need freedom or vbpr", a.model)));
    }
    if a.optims.is_empty() || a.sources.is_empty() || a.seeds == 0 {
        return Err(RobustnessError::Invalid("give at least one optimiser, source and seed".into()));
    }
    if let Some(r) = a.rates.iter().find(|r| !(0.0..=100.0).contains(*r)) {
        return Err(RobustnessError::Invalid(format!("noise rate {r} is not a percentage in 0..=100")));
    }
    let dir = match &a.data {
        Some(d) => d.clone(),
        None => crate::learn::dataset::named_dir("hm")?,
    };
    let (items, mapping, n_ids) = load_items(&dir, &a.catalog)?;
    let inter_path = crate::learn::data::find_inter(&dir)?;
    let inter = crate::learn::data::load_inter(&inter_path)?;
    if n_ids != inter.n_items {
        return Err(RobustnessError::Invalid(format!(
            "{} names {n_ids} items but {} has {}",
            mapping.path().display(),
            inter_path.display(),
            inter.n_items
        )));
    }
    let mut rates: Vec<f64> = a.rates.clone();
    if !rates.contains(&0.0) {
        rates.insert(0, 0.0);
    }
    rates.sort_by(|x, y| x.total_cmp(y));
    rates.dedup();
    let mut learn = cfg.learn.clone();
    learn.model = a.model;
    if let Some(e) = a.epochs {
        learn.epochs = e;
    }
    if let Some(p) = a.patience {
        learn.patience = p;
    }
    eprintln!(
        "data {}: {} users, {} items ({} in the catalogue), {} train pairs; encoder {}",
        inter_path.display(),
        inter.n_users,
        inter.n_items,
        items.len(),
        inter.train.len(),
        enc.model_id
    );
    let kinds_key = a.kinds.iter().map(|k| format!("{k:?}").to_lowercase()).collect::<Vec<_>>().join("-");
    let mut report = RobustnessReport {
        data: dir.display().to_string(),
        model: a.model,
        users: inter.n_users,
        items: inter.n_items,
        train_pairs: inter.train.len(),
        encoder: enc.model_id.clone(),
        degraded_cleaning: true,
        kinds: a.kinds.clone(),
        rates: rates.clone(),
        noise_seed: a.noise_seed,
        epochs: learn.epochs,
        patience: learn.patience,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        corrupted: BTreeMap::new(),
        fidelity: vec![],
        cells: vec![],
        runs: vec![],
        embed_s: 0.0,
        train_s: 0.0,
        peak_rss_bytes: None,
    };
    let mut clean_rows: HashMap<TextMode, Vec<Vec<f32>>> = HashMap::new();
    for &rate in &rates {
        let noisy = corrupt_catalog(&items, rate / 100.0, &a.kinds, a.noise_seed);
        report.corrupted.insert(rate_key(rate), noisy.counts());
        for &source in &a.sources {
            let t = Instant::now();
            let key = format!(
                "{}-{source:?}-{}-{kinds_key}-r{rate}-n{}-{}",
                enc.model_id,
                items.len(),
                a.noise_seed,
                a.catalog.trim_end_matches(".csv")
            )
            .to_lowercase();
            eprintln!("== rate {rate} %, {source:?} text: embedding {} items", items.len());
            let rows = embed_cached(enc, &noisy.items, source, cfg, a.cache.as_deref(), &key)?;
            report.embed_s += t.elapsed().as_secs_f64();
            if rate == 0.0 {
                clean_rows.insert(source, rows.clone());
            } else if let Some(base) = clean_rows.get(&source) {
                let mut by_kind: BTreeMap<Corruption, Vec<f64>> = BTreeMap::new();
                for (&i, &k) in &noisy.changed {
                    let dot: f32 = rows[i].iter().zip(&base[i]).map(|(x, y)| x * y).sum();
                    by_kind.entry(k).or_default().push(dot as f64);
                }
                for (kind, v) in by_kind {
                    let f = Fidelity { source, rate, kind, items: v.len(), mean_cosine: mean_sd(&v).0 };
                    eprintln!(
                        "  fidelity {kind:?}: mean cosine to the clean text {:.3} over {} items",
                        f.mean_cosine, f.items
                    );
                    report.fidelity.push(f);
                }
            }
            let ordered = mapping.order(&noisy.items, rows)?;
            let dim = ordered.first().map(|r| r.len()).unwrap_or(0);
            let flat: Vec<f32> = ordered.into_iter().flatten().collect();
            let feats = vec![Modality::new(format!("{source:?}-text").to_lowercase(), inter.n_items, dim, flat)?];
            for &optim in &a.optims {
                for s in 0..a.seeds {
                    let cfg_run = crate::config::LearnConfig { optim, seed: a.seed + s, ..learn.clone() };
                    let label = trainer::optim_from_config(&cfg_run).0.label().to_string();
                    let t = Instant::now();
                    let r = trainer::run(&cfg_run, &inter, &feats, None, trainer::Hooks::default())?;
                    report.train_s += t.elapsed().as_secs_f64();
                    let test = r.test.as_ref();
                    let row = RunRow {
                        rate,
                        source,
                        optim: label,
                        seed: cfg_run.seed,
                        recall_at_20: test.map(|m| m.recall_at(20)).unwrap_or(f64::NAN),
                        ndcg_at_20: test.map(|m| m.ndcg_at(20)).unwrap_or(f64::NAN),
                        best_epoch: r.best_epoch,
                        epochs_run: r.epochs_run,
                        train_s_per_epoch: r.train_s_per_epoch,
                        time_to_best_s: r.time_to_best_s,
                    };
                    eprintln!(
                        "  {} seed {}: test R@20 {:.4} N@20 {:.4}, best epoch {:?} of {}, {:.2} s/epoch",
                        row.optim,
                        row.seed,
                        row.recall_at_20,
                        row.ndcg_at_20,
                        row.best_epoch,
                        row.epochs_run,
                        row.train_s_per_epoch
                    );
                    report.runs.push(row);
                    report.cells = cells(&report.runs);
                    report.peak_rss_bytes = crate::sys::peak_rss_bytes();
                    if let Some(p) = &a.json {
                        write_json(&report, p)?;
                    }
                }
            }
        }
    }
    if let Some(p) = &a.plot {
        plot(&report, p)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(report)
}

fn write_json(r: &RobustnessReport, p: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(r).map_err(|e| RobustnessError::Invalid(e.to_string()))?;
    std::fs::write(p, text).map_err(|source| RobustnessError::Io { path: p.to_path_buf(), source })
}

/// Test R@20 against the noise rate: a colour per optimiser, solid for raw text, dashed for cleaned.
pub fn plot(r: &RobustnessReport, path: &Path) -> Result<()> {
    let optims: Vec<&str> = r.cells.iter().fold(vec![], |mut v, c| {
        if !v.contains(&c.optim.as_str()) {
            v.push(c.optim.as_str());
        }
        v
    });
    let mut lines = vec![];
    for (colour, optim) in optims.iter().enumerate() {
        for source in [TextMode::Raw, TextMode::Cleaned] {
            let points: Vec<(f64, f64)> = r
                .cells
                .iter()
                .filter(|c| c.optim == *optim && c.source == source)
                .map(|c| (c.rate, c.recall_mean))
                .collect();
            if !points.is_empty() {
                let label = format!("{optim}, {} text", format!("{source:?}").to_lowercase());
                lines.push(Line { label, points, dashed: source == TextMode::Cleaned, colour });
            }
        }
    }
    let title = format!(
        "{:?} on {}: test R@20 against corrupted descriptions (mean of seeds)",
        r.model,
        Path::new(&r.data).file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
    );
    line_chart_svg(path, &title, "descriptions corrupted (% of items)", "test R@20", &lines)
        .map_err(RobustnessError::Plot)
}

impl std::fmt::Display for RobustnessReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "bench robustness: {:?} on {} ({} users, {} items, {} train pairs), text by {}, cleaning without captions (degraded)",
            self.model, self.data, self.users, self.items, self.train_pairs, self.encoder
        )?;
        writeln!(
            f,
            "corruptions {:?}, noise seed {}, epoch cap {}, patience {}",
            self.kinds, self.noise_seed, self.epochs, self.patience
        )?;
        for (metric, pick) in [("test R@20", 0), ("test N@20", 1)] {
            writeln!(f, "\n{metric}, mean ± sd over seeds (change of the mean vs 0 %)")?;
            write!(f, "| text | optimiser |")?;
            for r in &self.rates {
                write!(f, " {r} % |")?;
            }
            writeln!(f)?;
            writeln!(f, "|---|---|{}", "---|".repeat(self.rates.len()))?;
            let mut keys: Vec<(TextMode, String)> = vec![];
            for c in &self.cells {
                if !keys.contains(&(c.source, c.optim.clone())) {
                    keys.push((c.source, c.optim.clone()));
                }
            }
            for (source, optim) in keys {
                write!(f, "| {} | {optim} |", format!("{source:?}").to_lowercase())?;
                for &rate in &self.rates {
                    match self.cells.iter().find(|c| c.source == source && c.optim == optim && c.rate == rate) {
                        Some(c) if pick == 0 && rate > 0.0 => write!(
                            f,
                            " {:.4} ± {:.4} ({:+.1} %) |",
                            c.recall_mean,
                            c.recall_sd,
                            100.0 * c.recall_change
                        )?,
                        Some(c) if pick == 0 => write!(f, " {:.4} ± {:.4} |", c.recall_mean, c.recall_sd)?,
                        Some(c) => write!(f, " {:.4} ± {:.4} |", c.ndcg_mean, c.ndcg_sd)?,
                        None => write!(f, " - |")?,
                    }
                }
                writeln!(f)?;
            }
        }
        if !self.fidelity.is_empty() {
            writeln!(f, "\ntext fidelity: mean cosine of a corrupted item's text feature to its clean one")?;
            writeln!(f, "| rate | corruption | items | raw | cleaned |")?;
            writeln!(f, "|---|---|---|---|---|")?;
            let mut seen = vec![];
            for x in &self.fidelity {
                if seen.contains(&(x.rate.to_bits(), x.kind)) {
                    continue;
                }
                seen.push((x.rate.to_bits(), x.kind));
                let get = |s: TextMode| {
                    self.fidelity
                        .iter()
                        .find(|y| y.rate == x.rate && y.kind == x.kind && y.source == s)
                        .map(|y| format!("{:.3}", y.mean_cosine))
                        .unwrap_or_else(|| "-".into())
                };
                writeln!(
                    f,
                    "| {} % | {:?} | {} | {} | {} |",
                    x.rate,
                    x.kind,
                    x.items,
                    get(TextMode::Raw),
                    get(TextMode::Cleaned)
                )?;
            }
        }
        let mib = self.peak_rss_bytes.map(|b| b as f64 / 1048576.0).unwrap_or(f64::NAN);
        writeln!(
            f,
            "\n{} runs; embedding {:.0} s, training {:.0} s, peak RSS {mib:.0} MiB",
            self.runs.len(),
            self.embed_s,
            self.train_s
        )
    }
}

impl super::Report for RobustnessReport {}
