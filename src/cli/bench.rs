//! `bench ...`: one variant per benchmark; each benchmark lives in `crate::bench` and returns a
//! [`Report`], which [`finish`] prints, writes as JSON and turns into the exit code.
use crate::bench::train::TrainBenchReport;
use crate::bench::Report;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Serving over the embedded broker: request latency from N simulated kiosks, and durable
    /// event ingest rate.
    Serve(crate::bench::serve::ServeBenchArgs),
    /// Capture: crops per second and end-to-end time from a shelf picture in a folder to stored crops.
    Capture(crate::bench::capture::CaptureBenchArgs),
    /// Recommender training: optimisers x seeds, test metrics and time per epoch / evaluation.
    Train(Box<super::train::BenchTrainArgs>),
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
    /// The paper's claim on product data: catalogue descriptions corrupted at several rates, FREEDOM
    /// trained on the raw and on the cleaned text with each optimiser and seed; table, JSON, SVG plot.
    Robustness(Box<RobustnessCmd>),
}

#[derive(clap::Args, Debug)]
pub struct RobustnessCmd {
    #[command(flatten)]
    pub bench: crate::bench::robustness::RobustnessArgs,
    #[command(flatten)]
    pub config: super::ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub bench: crate::bench::embed::EmbedBenchArgs,
    #[command(flatten)]
    pub config: super::ConfigArg,
}

/// Prints the report's table on stdout, writes its JSON to `json` when given, and maps its verdict
/// to the exit code: the same for every benchmark.
fn finish(r: &impl Report, json: Option<&Path>) -> anyhow::Result<ExitCode> {
    print!("{r}");
    if let Some(p) = json {
        std::fs::write(p, serde_json::to_string_pretty(r)?).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(if r.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn run(c: BenchCmd) -> anyhow::Result<ExitCode> {
    match c {
        BenchCmd::Serve(a) => finish(&crate::bench::serve::run(&a)?, a.json.as_deref()),
        BenchCmd::Capture(a) => finish(&crate::bench::capture::run(&a)?, a.json.as_deref()),
        BenchCmd::Soak(a) => finish(&crate::bench::soak::run(&a)?, a.json.as_deref()),
        BenchCmd::Train(a) => {
            let r = crate::bench::train::run(&a.options()?)?;
            let code = finish(&r, a.json.as_deref())?;
            if let (Some(p), TrainBenchReport::Runs(runs)) = (&a.markdown, &r) {
                runs.append_markdown(p)?;
            }
            Ok(code)
        }
        BenchCmd::Loop(a) => finish(&crate::bench::online::run(&a)?, a.json.as_deref()),
        BenchCmd::Caption(a) => match &a.write_gguf {
            // The benchmark's own child process: only the random checkpoint, no report.
            Some(p) => {
                crate::bench::caption::write_gguf(&a, p)?;
                Ok(ExitCode::SUCCESS)
            }
            None => finish(&crate::bench::caption::run(&a)?, a.json.as_deref()),
        },
        BenchCmd::Robustness(a) => {
            let cfg = super::load_config(&a.config)?;
            let enc = crate::denoise::TextEncoder::from_config(&cfg.denoise)
                .context("bench robustness embeds the catalogue text with MiniLM (`sgbd-edge models fetch`)")?;
            finish(&crate::bench::robustness::run(&a.bench, &cfg, &enc)?, a.bench.json.as_deref())
        }
        BenchCmd::Embed(a) => {
            let cfg = super::load_config(&a.config)?;
            finish(&crate::bench::embed::run(&a.bench, &cfg.denoise)?, a.bench.json.as_deref())
        }
    }
}
