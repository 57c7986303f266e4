//! `bench ...`: one variant per benchmark; each benchmark lives in `crate::bench`.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Serving over the embedded broker: request latency from N simulated kiosks, and durable
    /// event ingest rate.
    Serve(crate::bench::serve::ServeBenchArgs),
    /// Recommender training: optimisers x seeds, test metrics and time per epoch / evaluation.
    Train(super::train::BenchTrainArgs),
}

pub fn run(c: BenchCmd) -> anyhow::Result<ExitCode> {
    match c {
        BenchCmd::Serve(a) => {
            crate::bench::serve::run(&a)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Train(a) => super::train::bench(a),
    }
}
