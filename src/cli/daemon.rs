//! `run` (owned by the daemon concern).
use super::ConfigArg;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also start a simulated kiosk that sends events and requests and prints the replies.
    #[arg(long)]
    pub demo: bool,
}

pub fn run(_a: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("run: not built yet")
}
