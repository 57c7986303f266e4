//! `capture`: run the configured cameras once (or keep running) and print the crops;
//! `capture compose-demo`: build the demo shelf image and its planogram from `assets/demo`.
use std::path::PathBuf;
use std::process::ExitCode;

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
            let d = crate::capture::demo::compose_demo(&assets, &out, &incoming)?;
            println!("wrote {} ({} slots)", d.image_path.display(), d.slots.len());
            println!("wrote {}", d.planogram_path.display());
            Ok(ExitCode::SUCCESS)
        }
        None => anyhow::bail!("capture: camera run not built yet"),
    }
}

