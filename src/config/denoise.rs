use super::{Issues, Validate};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// BLIP captioning, description cleaning and feature extraction (the denoise concern extends this).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DenoiseConfig {
    /// Directory with model files named in `models/manifest.toml`.
    pub models_dir: PathBuf,
}

impl Default for DenoiseConfig {
    fn default() -> Self {
        Self { models_dir: PathBuf::from("./models") }
    }
}

impl Validate for DenoiseConfig {
    fn validate(&self, _issues: &mut Issues) {}
}
