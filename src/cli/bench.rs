//! `bench ...`: one variant per benchmark; each benchmark lives in `crate::bench`.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Serving over the embedded broker: request latency from N simulated kiosks, and durable
    /// event ingest rate.
    Serve(crate::bench::serve::ServeBenchArgs),
    /// Capture: crops per second and end-to-end time from a shelf picture in a folder to stored crops.
    Capture(crate::bench::capture::CaptureBenchArgs),
    /// Soak: kiosk requests and acknowledged events for `--minutes`; RSS, latency percentiles and
    /// errors per window.
    Soak(crate::bench::soak::SoakArgs),
}

pub fn run(c: BenchCmd) -> anyhow::Result<ExitCode> {
    match c {
        BenchCmd::Serve(a) => {
            crate::bench::serve::run(&a)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Capture(a) => super::capture::bench(a),
        BenchCmd::Soak(a) => {
            let r = crate::bench::soak::run(&a)?;
            Ok(if r.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
