//! `doctor` (self-test) and `status` (owned by the doctor concern).
use super::ConfigArg;
use crate::doctor::{self, Check, CheckStatus};
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
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One line per check; exit 1 if any check fails (a bad config file fails alone, with its problems).
pub fn doctor(a: DoctorArgs) -> anyhow::Result<ExitCode> {
    let cfg = match super::load_config(&a.config) {
        Ok(c) => c,
        Err(e) => {
            let c = Check { name: "config".into(), status: CheckStatus::Fail, detail: format!("{e:#}") };
            println!("{c}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let checks = doctor::run_checks(&cfg);
    for c in &checks {
        println!("{c}");
    }
    Ok(if doctor::any_failed(&checks) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Store counts, active model, daemon state; `--json` for machines.
pub fn status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(&a.config)?;
    let report = doctor::status_report(&cfg);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
        if let Some(s) = report.daemon.status.as_ref().filter(|_| report.daemon.running) {
            if let Some(stages) = s.get("stages").and_then(|v| v.as_object()) {
                for (name, st) in stages {
                    let ok = st.get("ok").and_then(|v| v.as_bool()).unwrap_or(false);
                    let ago = st.get("last_beat_ms_ago").and_then(|v| v.as_i64()).unwrap_or(-1);
                    println!("  stage {name:<12} {} (last beat {ago} ms ago)", if ok { "ok" } else { "STUCK" });
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
