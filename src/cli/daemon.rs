//! `run` (owned by the daemon concern).
use super::ConfigArg;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also start a simulated kiosk that sends events and requests and prints the replies.
    #[arg(long)]
    pub demo: bool,
    /// Catalogue the demo imports into an empty store (Myntra styles.csv layout).
    #[arg(long, default_value = crate::demo::DEMO_CATALOG)]
    pub demo_catalog: PathBuf,
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = match super::load_config(&a.config) {
        Ok(c) => c,
        Err(e) if e.downcast_ref::<crate::config::ConfigError>().is_some() => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(crate::config::EX_CONFIG));
        }
        Err(e) => return Err(e),
    };
    let opts = crate::daemon::DaemonOptions {
        config_path: a.config.config.clone(),
        demo: a.demo,
        demo_catalog: Some(a.demo_catalog),
    };
    crate::daemon::run_blocking(cfg, opts)?;
    Ok(ExitCode::SUCCESS)
}
