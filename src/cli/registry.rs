//! `models list|activate|rollback|pin-version|unpin`: the recommender model registry
//! (`crate::registry`). A running daemon notices the change within `online.poll_s` and swaps the
//! model it serves.
use super::ConfigArg;
use crate::registry::Registry;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    /// A registered model version (see `models list`).
    pub version: String,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct PlainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

fn open(c: &ConfigArg) -> anyhow::Result<(crate::store::Store, Registry)> {
    let cfg = super::load_config(c)?;
    Ok((crate::store::open_config(&cfg)?, Registry::from_config(&cfg)))
}

/// `models list`.
pub fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let (store, reg) = open(&a.config)?;
    let rows = store.model_versions()?;
    let pinned = reg.pinned()?;
    if a.json {
        let v = serde_json::json!({ "pinned": pinned, "versions": rows });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no model versions yet (the daemon trains one after online.min_new_events interactions)");
    }
    println!("{:<36} {:<9} {:>9} {:>9} {:<36} checks", "version", "status", "R@20", "N@20", "parent");
    for r in &rows {
        let m = |k: &str| r.metrics.get(k).and_then(|v| v.as_f64()).map_or("-".to_string(), |x| format!("{x:.4}"));
        let ok = match reg.verify(r) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("FAIL: {e}"),
        };
        let pin = if pinned.as_deref() == Some(r.version.as_str()) { " (pinned)" } else { "" };
        println!(
            "{:<36} {:<9} {:>9} {:>9} {:<36} {ok}{pin}",
            r.version,
            r.status.as_str(),
            m("recall@20"),
            m("ndcg@20"),
            r.parent.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `models activate VERSION`.
pub fn activate(a: VersionArgs) -> anyhow::Result<ExitCode> {
    let (store, reg) = open(&a.config)?;
    let row = reg.activate(&store, &a.version, false)?;
    println!("active: {}", row.version);
    Ok(ExitCode::SUCCESS)
}

/// `models rollback`.
pub fn rollback(a: PlainArgs) -> anyhow::Result<ExitCode> {
    let (store, reg) = open(&a.config)?;
    let row = reg.rollback(&store)?;
    println!("rolled back; active: {}", row.version);
    Ok(ExitCode::SUCCESS)
}

/// `models pin-version VERSION`.
pub fn pin(a: VersionArgs) -> anyhow::Result<ExitCode> {
    let (store, reg) = open(&a.config)?;
    reg.pin(&store, Some(&a.version))?;
    println!("pinned and active: {}", a.version);
    Ok(ExitCode::SUCCESS)
}

/// `models unpin`.
pub fn unpin(a: PlainArgs) -> anyhow::Result<ExitCode> {
    let (store, reg) = open(&a.config)?;
    reg.pin(&store, None)?;
    println!("unpinned");
    Ok(ExitCode::SUCCESS)
}
