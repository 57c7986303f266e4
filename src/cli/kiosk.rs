//! `kiosk` (owned by the MQTT concern).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct KioskArgs {}

pub fn run(_a: KioskArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("kiosk: not built yet")
}
