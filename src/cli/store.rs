//! `import catalog|interactions` (owned by the store concern).
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum ImportCmd {
    /// Not built yet.
    Catalog,
}

pub fn import(_c: ImportCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("import: not built yet")
}
