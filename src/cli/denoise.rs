//! `caption` and `denoise` (owned by the denoise concern).
use super::ConfigArg;
use crate::denoise::features::{self, TextMode};
use crate::denoise::{self, Captioner, Denoiser};
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct CaptionArgs {
    /// Photos (JPEG/PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyText {
    /// title + description as written.
    Raw,
    /// title + cleaned description (+ caption).
    Cleaned,
}

#[derive(clap::Args, Debug)]
pub struct DenoiseArgs {
    /// Catalogue CSV: H&M articles_sample.csv, Myntra styles.csv, or sku,title,description,...
    #[arg(long)]
    pub catalog: PathBuf,
    /// Folder with the photos (H&M: <dir>/<3 digits>/<id>.jpg; Myntra and generic: <dir>/<id>.jpg).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Do not write to the store (print only).
    #[arg(long)]
    pub dry_run: bool,
    /// Print the totals only, not every phrase.
    #[arg(long, short)]
    pub quiet: bool,
    /// Write MiniLM text features (float32 .npy, one row per item) to this file.
    #[arg(long)]
    pub write_npy: Option<PathBuf>,
    /// Which text --write-npy embeds.
    #[arg(long, value_enum, default_value = "cleaned")]
    pub npy_text: NpyText,
    /// With --npy-text raw: only write the .npy (no cleaning run, nothing stored).
    #[arg(long, requires = "write_npy")]
    pub npy_only: bool,
    /// MMRec i_id_mapping.csv: only the mapped items, and --write-npy rows in itemID order (row i = itemID i).
    #[arg(long)]
    pub id_map: Option<PathBuf>,
    /// Robustness check instead of a run: inject noise into the descriptions and report how much
    /// of it cleaning removes and how much genuine text it keeps.
    #[arg(long)]
    pub robustness: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn caption(a: CaptionArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(&a.config)?;
    let t0 = Instant::now();
    let mut cap = Captioner::from_config(&cfg.denoise).context("cannot load the BLIP captioner")?;
    eprintln!("loaded {} in {:.1} s", cap.model_id, t0.elapsed().as_secs_f64());
    let mut failed = 0;
    for chunk in a.images.chunks(cap.batch) {
        let mut imgs = Vec::new();
        let mut paths = Vec::new();
        for p in chunk {
            match denoise::load_image(p) {
                Ok(i) => {
                    imgs.push(i);
                    paths.push(p);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {e}");
                }
            }
        }
        if imgs.is_empty() {
            continue;
        }
        for (p, c) in paths.iter().zip(cap.caption(&imgs)?) {
            println!("{}\t{:.0} ms\t{}", p.display(), c.vision_ms + c.decode_ms, c.text);
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn denoise(a: DenoiseArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(&a.config)?;
    let mut items =
        features::read_catalog(&a.catalog, a.images.as_deref(), if a.id_map.is_some() { None } else { a.limit })?;
    let mapping = a.id_map.as_deref().map(features::IdMapping::read).transpose()?;
    if let Some(m) = &mapping {
        // Only the mapped items (e.g. the 4,116 H&M articles of hm.inter), then --limit.
        items = m.retain_mapped(items);
        if let Some(l) = a.limit {
            items.truncate(l);
        }
    }
    anyhow::ensure!(!items.is_empty(), "no items in {}", a.catalog.display());
    if a.robustness {
        let enc = denoise::TextEncoder::from_config(&cfg.denoise).ok();
        if enc.is_none() {
            eprintln!("MiniLM files missing: rules only (run `sgbd-edge models fetch`)");
        }
        let r = denoise::robustness::check(&items, &cfg.denoise, enc.as_ref(), 42)?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    if a.npy_only {
        anyhow::ensure!(
            a.npy_text == NpyText::Raw,
            "--npy-only works with --npy-text raw (cleaned text needs the cleaning run)"
        );
        let enc = denoise::TextEncoder::from_config(&cfg.denoise)
            .context("--write-npy needs the MiniLM files (`sgbd-edge models fetch`)")?;
        let rows = features::embed_catalog(&enc, &items, TextMode::Raw, &HashMap::new(), &cfg.denoise)?;
        let rows = match &mapping {
            Some(m) => m.order(&items, rows)?,
            None => rows,
        };
        features::write_npy(&rows, a.write_npy.as_deref().context("--write-npy")?)?;
        println!(
            "wrote {} ({} x {})",
            a.write_npy.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            rows.len(),
            rows.first().map(|r| r.len()).unwrap_or(0)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (mut d, models) = Denoiser::load(&cfg.denoise);
    if !models.captioning {
        eprintln!("{}: degraded cleaning", models.caption_detail);
    }
    let store = if a.dry_run {
        None
    } else {
        let db = crate::store::db_path(&cfg);
        Some(
            crate::store::Store::open(&db, cfg.store.busy_timeout_ms)
                .with_context(|| format!("opening the store {}", db.display()))?,
        )
    };
    let quiet = a.quiet;
    let t0 = Instant::now();
    let mut cleaned_feats: HashMap<String, Vec<f32>> = HashMap::new();
    let sum = denoise::pipeline::denoise_catalog(&mut d, &items, store.as_ref(), |it, r| {
        if let Some(f) = &r.text_feature {
            cleaned_feats.insert(it.sku.clone(), f.clone());
        }
        if quiet {
            return;
        }
        println!("{}  {}", it.sku, it.title);
        if let Some(c) = &r.denoised.caption {
            println!("  caption: {c}");
        }
        for p in &r.denoised.phrases {
            let sim = p.similarity.map(|s| format!(" (cos {s:.2})")).unwrap_or_default();
            if p.kept {
                println!("  + {}{sim}", p.text);
            } else {
                println!("  - [{}] {}{sim}", p.reason, p.text);
            }
        }
    })?;
    let secs = t0.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string_pretty(&sum)?);
    eprintln!("{} items in {secs:.1} s{}", sum.items, if sum.degraded { " (degraded: no captions)" } else { "" });
    if let Some(out) = &a.write_npy {
        let enc = d.encoder.as_ref().context("--write-npy needs the MiniLM files (`sgbd-edge models fetch`)")?;
        // Cleaned: the features of the run above (with captions when BLIP ran); raw: embed anew.
        let rows = match a.npy_text {
            NpyText::Raw => features::embed_catalog(enc, &items, TextMode::Raw, &HashMap::new(), &cfg.denoise)?,
            NpyText::Cleaned => items
                .iter()
                .map(|it| cleaned_feats.get(&it.sku).cloned().context("missing feature"))
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        let rows = match &mapping {
            Some(m) => m.order(&items, rows)?,
            None => rows,
        };
        features::write_npy(&rows, out)?;
        println!("wrote {} ({} x {})", out.display(), rows.len(), rows.first().map(|r| r.len()).unwrap_or(0));
    }
    Ok(ExitCode::SUCCESS)
}
