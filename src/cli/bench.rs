//! `bench ...`: one variant per benchmark; each benchmark lives in `crate::bench`.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Not built yet.
    Serve,
    /// Capture: crops per second and end-to-end time from a shelf picture in a folder to stored crops.
    Capture(crate::bench::capture::CaptureBenchArgs),
}

pub fn run(c: BenchCmd) -> anyhow::Result<ExitCode> {
    match c {
        BenchCmd::Capture(a) => super::capture::bench(a),
        _ => anyhow::bail!("bench: not built yet"),
    }
}
