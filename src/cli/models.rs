//! `models fetch|verify` (model files, owned by denoise) and `models list|activate|rollback`
//! (recommender registry, owned by the learning loop).
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum ModelsCmd {
    /// Not built yet.
    List,
}

pub fn run(_c: ModelsCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("models: not built yet")
}
