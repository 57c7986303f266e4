//! `train` (owned by the learn concern).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {}

pub fn run(_a: TrainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("train: not built yet")
}
