//! `bench ...`: one variant per benchmark; each benchmark lives in `crate::bench`.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Not built yet.
    Serve,
}

pub fn run(_c: BenchCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("bench: not built yet")
}
