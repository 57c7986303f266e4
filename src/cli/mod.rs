//! The `sgbd-edge` command line: the binary's edge, where library errors become messages and
//! exit codes (`anyhow` is used here and nowhere else in the library).
//!
//! One file per group of subcommands, owned by the concern it drives.

mod bench;
mod capture;
mod config_cmd;
mod daemon;
mod denoise;
mod doctor;
mod kiosk;
mod models;
mod registry;
mod store;
mod train;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "sgbd-edge",
    version,
    about = "In-store edge appliance: capture, BLIP denoising, SGBD on-device learning, MQTT serving"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config FILE`, shared by the subcommands that read the appliance's configuration.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// Configuration file (TOML). Without it, the compiled-in defaults are used.
    #[arg(long, short = 'c', env = "SGBD_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the appliance (daemon). `--demo` also starts a simulated kiosk that prints replies.
    Run(daemon::RunArgs),
    /// Check a configuration file: every problem with key path and line; exit 78 if bad.
    Validate(config_cmd::ValidateArgs),
    /// Print the annotated default configuration.
    PrintDefaultConfig,
    /// Print the JSON Schema of the MQTT contract (shipped as docs/mqtt.schema.json).
    PrintMqttSchema,
    /// Self-test: config, database, model files and checksums, broker, disk, cameras.
    #[command(alias = "self-test")]
    Doctor(doctor::DoctorArgs),
    /// Show what the store and registry hold (items, interactions, active model, outbox).
    Status(doctor::StatusArgs),
    /// Import a catalogue or interactions into the store (idempotent).
    #[command(subcommand)]
    Import(store::ImportCmd),
    /// Act as a kiosk: send an event or ask for recommendations over MQTT.
    Kiosk(kiosk::KioskArgs),
    /// Train a recommender on a data set (MMRec .inter files and features) and write a report.
    Train(Box<train::TrainArgs>),
    /// Model files and the recommender model registry.
    #[command(subcommand)]
    Models(models::ModelsCmd),
    /// Caption product photos with BLIP.
    Caption(denoise::CaptionArgs),
    /// Clean merchant descriptions (BLIP CapFilt-style) and store item texts and features.
    Denoise(denoise::DenoiseArgs),
    /// Take one capture from the configured cameras and cut it into planogram crops.
    Capture(capture::CaptureArgs),
    /// Benchmarks: print a table, optionally write JSON.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// Parses the command line and runs it. Used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "command failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Run(a) => daemon::run(a),
        Command::Validate(a) => config_cmd::validate(a),
        Command::PrintDefaultConfig => config_cmd::print_default(),
        Command::PrintMqttSchema => {
            println!("{}", serde_json::to_string_pretty(&crate::mqtt::contract::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(a) => doctor::doctor(a),
        Command::Status(a) => doctor::status(a),
        Command::Import(c) => store::import(c),
        Command::Kiosk(a) => kiosk::run(a),
        Command::Train(a) => train::run(*a),
        Command::Models(c) => models::run(c),
        Command::Caption(a) => denoise::caption(a),
        Command::Denoise(a) => denoise::denoise(a),
        Command::Capture(a) => capture::run(a),
        Command::Bench(c) => bench::run(c),
    }
}

/// Loads the configuration named by `--config`, or the defaults; initialises logging from it.
pub(crate) fn load_config(arg: &ConfigArg) -> anyhow::Result<crate::config::Config> {
    let cfg = match &arg.config {
        Some(p) => crate::config::Config::load(p)?,
        None => crate::config::Config::default(),
    };
    crate::telemetry::init_logging(&cfg.log);
    Ok(cfg)
}
