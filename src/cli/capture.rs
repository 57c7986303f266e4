//! `capture`: run the configured cameras once (or keep running) and print the crops;
//! `capture compose-demo`: build the demo shelf image and its planogram from `assets/demo`.
use crate::capture::pipeline::{capture_once, CameraThreads, Capturer, FrameReport};
use crate::telemetry::Metrics;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CaptureArgs {
    #[command(subcommand)]
    pub cmd: Option<CaptureCmd>,
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Take one frame from each camera (waiting up to --wait-ms), print the crops and exit.
    #[arg(long)]
    pub once: bool,
    /// How long to wait for each camera's frame, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub wait_ms: u64,
}

#[derive(clap::Subcommand, Debug)]
pub enum CaptureCmd {
    /// Compose the demo shelf (shelf-a.jpg) and its planogram.toml from the demo product photos.
    ComposeDemo {
        /// Folder with catalog.csv and images/<id>.jpg.
        #[arg(long, default_value = "assets/demo")]
        assets: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "assets/demo/shelf")]
        out: PathBuf,
        /// The folder the demo camera watches (written into the planogram).
        #[arg(long, default_value = "./var/incoming/shelf-a")]
        incoming: String,
    },
}

pub fn run(a: CaptureArgs) -> anyhow::Result<ExitCode> {
    match a.cmd {
        Some(CaptureCmd::ComposeDemo { assets, out, incoming }) => {
            let d = crate::demo::assets::compose_demo(&assets, &out, &incoming)?;
            println!("wrote {} ({} slots)", d.image_path.display(), d.slots.len());
            println!("wrote {}", d.planogram_path.display());
            Ok(ExitCode::SUCCESS)
        }
        None => run_cameras(&a),
    }
}

fn print_report(r: &FrameReport) {
    println!("camera {} frame {} ({}): {:.1} ms", r.camera_id, r.captured_ms, r.origin, r.process_ms);
    for c in &r.crops {
        let what = match (c.changed, c.new_item) {
            (true, true) => "changed (new item)",
            (true, false) => "changed",
            _ => "unchanged",
        };
        let dist = c.distance.map_or("-".to_string(), |d| d.to_string());
        let pix = c.pixel_distance.map_or("-".to_string(), |d| format!("{d:.1}"));
        let path = c.path.as_ref().map_or(String::new(), |p| p.display().to_string());
        println!(
            "  slot {:>2}  {:<16} {:<18} dhash {:>2}  thumb {:>6}  {:016x}  {}",
            c.slot, c.sku, what, dist, pix, c.phash, path
        );
    }
    for e in &r.slot_errors {
        println!("  error: {e}");
    }
}

fn run_cameras(a: &CaptureArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(&a.config)?;
    if cfg.capture.cameras.is_empty() {
        anyhow::bail!("no cameras configured ([[capture.cameras]] in the config file)");
    }
    let store = crate::store::open_config(&cfg)
        .with_context(|| format!("opening the store {}", crate::store::db_path(&cfg).display()))?;
    let metrics = Arc::new(Metrics::default());
    let mut cap = Capturer::new(&cfg, metrics.clone());
    let mut failed = false;
    if a.once {
        let results = capture_once(&cfg.capture, Duration::from_millis(a.wait_ms), &cap.status(), &metrics);
        for (id, r) in results {
            match r {
                Ok(Some(f)) => match cap.process_frame(&store, &f) {
                    Ok(rep) => {
                        failed |= !rep.slot_errors.is_empty();
                        print_report(&rep);
                    }
                    Err(e) => {
                        failed = true;
                        println!("camera {id}: bad picture: {e}");
                    }
                },
                Ok(None) => println!("camera {id}: no new picture within {} ms", a.wait_ms),
                Err(e) => {
                    failed = true;
                    println!("camera {id}: {e}");
                }
            }
        }
        for s in cap.status().snapshot() {
            println!("status {}: {:?}, frames {}, errors {}", s.id, s.state, s.frames, s.errors);
        }
        return Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    // Continuous: one thread per camera; runs until interrupted.
    let threads = CameraThreads::spawn(&cfg.capture, cap.status(), metrics)?;
    eprintln!("capturing from {} camera(s); Ctrl-C to stop", cfg.capture.cameras.len());
    while let Ok(f) = threads.frames.recv() {
        match cap.process_frame(&store, &f) {
            Ok(rep) => print_report(&rep),
            Err(e) => println!("camera {}: bad picture: {e}", f.camera_id),
        }
    }
    threads.stop();
    Ok(ExitCode::SUCCESS)
}
