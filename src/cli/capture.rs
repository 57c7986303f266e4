//! `capture` (owned by the capture concern).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CaptureArgs {}

pub fn run(_a: CaptureArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("capture: not built yet")
}
