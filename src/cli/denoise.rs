//! `caption` and `denoise` (owned by the denoise concern).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CaptionArgs {}

#[derive(clap::Args, Debug)]
pub struct DenoiseArgs {}

pub fn caption(_a: CaptionArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("caption: not built yet")
}
pub fn denoise(_a: DenoiseArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("denoise: not built yet")
}
