//! `bench ...`: one variant per benchmark; each benchmark lives in `crate::bench`.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Not built yet.
    Serve,
    /// Recommender training: optimisers x seeds, test metrics and time per epoch / evaluation.
    Train(super::train::BenchTrainArgs),
}

pub fn run(c: BenchCmd) -> anyhow::Result<ExitCode> {
    match c {
        BenchCmd::Train(a) => super::train::bench(a),
        #[allow(unreachable_patterns)]
        _ => anyhow::bail!("bench: not built yet"),
    }
}
