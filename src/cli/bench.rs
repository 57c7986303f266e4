//! `bench ...`: one variant per benchmark; each benchmark lives in `crate::bench`.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Serving over the embedded broker: request latency from N simulated kiosks, and durable
    /// event ingest rate.
    Serve(crate::bench::serve::ServeBenchArgs),
    /// Capture: crops per second and end-to-end time from a shelf picture in a folder to stored crops.
    Capture(crate::bench::capture::CaptureBenchArgs),
    /// Recommender training: optimisers x seeds, test metrics and time per epoch / evaluation.
    Train(super::train::BenchTrainArgs),
    /// BLIP-large captioning (random weights): vision encoder, ms/token before/after the decoding
    /// cache, images/s batched, peak RSS.
    Caption(crate::bench::caption::CaptionBenchArgs),
    /// MiniLM sentence embedding: sentences/s batched vs one at a time.
    Embed(EmbedArgs),
    /// The learning loop: replay timestamped interactions as kiosk events; online hit rate for
    /// SGBD vs Adam fine-tuning vs popularity, round wall time and RSS, latency while training.
    Loop(crate::bench::online::LoopBenchArgs),
    /// Soak: kiosk requests and acknowledged events for `--minutes`; RSS, latency percentiles and
    /// errors per window.
    Soak(crate::bench::soak::SoakArgs),
}

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub bench: crate::bench::embed::EmbedBenchArgs,
    #[command(flatten)]
    pub config: super::ConfigArg,
}

fn write_json<T: serde::Serialize>(path: &Option<std::path::PathBuf>, v: &T) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(v)?)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
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
            Ok(if r.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BenchCmd::Train(a) => super::train::bench(a),
        BenchCmd::Loop(a) => {
            crate::bench::online::run(&a)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Caption(a) => {
            if let Some(b) = crate::bench::caption::run(&a)? {
                crate::bench::caption::print(&b);
                write_json(&a.json, &b)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Embed(a) => {
            let cfg = super::load_config(&a.config)?;
            let b = crate::bench::embed::run(&a.bench, &cfg.denoise)?;
            crate::bench::embed::print(&b);
            write_json(&a.bench.json, &b)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
