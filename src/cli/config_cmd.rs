use crate::config::{self, EX_CONFIG};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Configuration file to check.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
}

pub fn validate(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let src = match std::fs::read_to_string(&a.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", a.config.display());
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
    match config::validate_str(&src) {
        Ok(_) => {
            println!("{}: ok", a.config.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(issues) => {
            for i in &issues {
                eprintln!("{}: {i}", a.config.display());
            }
            eprintln!("{}: {} problem(s)", a.config.display(), issues.len());
            Ok(ExitCode::from(EX_CONFIG))
        }
    }
}

pub fn print_default() -> anyhow::Result<ExitCode> {
    print!("{}", config::ANNOTATED_DEFAULT);
    Ok(ExitCode::SUCCESS)
}
