//! `doctor` (self-test) and `status` (owned by the doctor concern).
use super::ConfigArg;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn doctor(_a: DoctorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("doctor: not built yet")
}
pub fn status(_a: StatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("status: not built yet")
}
