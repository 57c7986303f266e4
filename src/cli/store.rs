//! `import catalog|interactions` (owned by the store concern).
use super::ConfigArg;
use crate::store::{self, ImportSummary};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum ImportCmd {
    /// Import a catalogue CSV: Myntra styles.csv, H&M articles.csv, or generic sku,title,description,...
    Catalog(ImportArgs),
    /// Import interactions: events CSV (event_id,user,sku,kind,ts_ms[,kiosk]) or MMRec .inter (tab-separated).
    Interactions(InteractionsArgs),
}

#[derive(clap::Args, Debug)]
pub struct InteractionsArgs {
    #[command(flatten)]
    pub import: ImportArgs,
    /// MMRec i_id_mapping.csv: store the original item ids (e.g. H&M article_id) instead of itemID.
    #[arg(long)]
    pub item_map: Option<PathBuf>,
    /// MMRec u_id_mapping.csv: store the original user ids instead of userID.
    #[arg(long)]
    pub user_map: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The file to import.
    pub file: PathBuf,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Per-row errors printed; the rest are counted.
const SHOWN_ERRORS: usize = 20;

pub fn import(c: ImportCmd) -> anyhow::Result<ExitCode> {
    let (args, opts) = match c {
        ImportCmd::Catalog(a) => (a, None),
        ImportCmd::Interactions(a) => {
            (a.import, Some(store::InterImportOptions { item_map: a.item_map, user_map: a.user_map }))
        }
    };
    let cfg = super::load_config(&args.config)?;
    let db = store::db_path(&cfg);
    let mut st = store::Store::open(&db, cfg.store.busy_timeout_ms)
        .with_context(|| format!("opening the store {}", db.display()))?;
    let res = match &opts {
        None => store::import_catalog_csv(&mut st, &args.file),
        Some(o) => store::import_interactions_with(&mut st, &args.file, o),
    };
    let summary = res.with_context(|| format!("importing {}", args.file.display()))?;
    print_summary(&args.file, &summary);
    Ok(if summary_ok(&summary) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Success when something was imported (or was already there), or when nothing failed.
fn summary_ok(s: &ImportSummary) -> bool {
    s.errors.is_empty() || s.inserted + s.duplicates > 0
}

fn print_summary(file: &std::path::Path, s: &ImportSummary) {
    println!("{}: {s}", file.display());
    for (line, msg) in s.errors.iter().take(SHOWN_ERRORS) {
        println!("  line {line}: {msg}");
    }
    if s.errors.len() > SHOWN_ERRORS {
        println!("  ... and {} more errors", s.errors.len() - SHOWN_ERRORS);
    }
}
