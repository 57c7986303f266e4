//! BLIP captioning, description cleaning (CapFilt-style), MiniLM text and BLIP image features.
//!
//! - [`blip`]: the captioner (our vision encoder and cached batched text decoder; candle's
//!   upstream model only as the baseline),
//! - [`vision`], [`bert`]: BLIP's ViT and BERT blocks (BLIP's decoder), with the vectorised exact
//!   GELU, softmax and attention of [`crate::kernels`],
//! - [`embed`]: all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2 norm) through
//!   [`packed_bert`], a BERT encoder over unpadded sentences with f32 or int8
//!   ([`crate::kernels::qgemm`]) linears,
//! - [`text`]: splitting a merchant description into phrases and dropping noise,
//! - [`features`]: catalogue readers (H&M, Myntra) and item text feature builders,
//! - [`robustness`]: injected-noise check of the cleaning on real descriptions,
//! - [`catalog_noise`]: catalogue descriptions corrupted as real catalogues go wrong (`bench robustness`),
//! - [`pipeline`]: the one denoise path: [`Denoiser::load`] (models as configured, degraded with
//!   a logged reason) and [`Denoiser::process_batch`] / [`Denoiser::process_item`] (caption,
//!   clean, embed, store features first and the clean text last); the CLI's whole catalogue
//!   ([`pipeline::denoise_catalog`]) and the daemon's shelf stage both go through it,
//! - [`testutil`]: random BLIP checkpoints in the real tensor layout, for tests and benchmarks.
pub mod bert;
pub mod blip;
pub mod catalog_noise;
pub mod embed;
pub mod features;
pub mod packed_bert;
pub mod pipeline;
pub mod robustness;
pub mod testutil;
pub mod text;
pub mod vision;
pub mod weights;

pub use blip::{Caption, Captioner, DecodeMode};
pub use embed::TextEncoder;
pub use pipeline::{Denoiser, ItemResult, LoadReport};
pub use text::{clean_description, Denoised, PhraseDecision};

/// Errors of the denoise concern.
#[derive(Debug, thiserror::Error)]
pub enum DenoiseError {
    #[error(transparent)]
    ModelFile(#[from] crate::modelfiles::ModelFileError),
    #[error("model error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("image {path}: {msg}")]
    Image { path: String, msg: String },
    #[error("catalogue {path}: {msg}")]
    Catalog { path: String, msg: String },
    #[error("i/o error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("denoise.device: {0}")]
    Device(#[from] crate::device::UnknownDevice),
}

pub type Result<T> = std::result::Result<T, DenoiseError>;

/// `denoise.device` as a [`crate::device::DevicePref`]: `cpu`, `cuda` (or `auto`); anything else
/// is [`DenoiseError::Device`] naming the value and the accepted ones.
pub fn device_pref(name: &str) -> Result<crate::device::DevicePref> {
    Ok(name.parse()?)
}

/// The device `denoise.device` names, picked by [`crate::device::select`] (which falls back to the
/// CPU with a log line when the binary has no `cuda` feature or no GPU answers). An unknown name,
/// which `validate` refuses and [`Denoiser::load`] reports as the reason captioning is disabled
/// before ever getting here, gives the CPU with an error line.
pub fn select_device(name: &str) -> candle_core::Device {
    match device_pref(name) {
        Ok(pref) => crate::device::select(pref),
        Err(e) => {
            tracing::error!(error = %e, "using the CPU");
            candle_core::Device::Cpu
        }
    }
}

/// Loads an image file (JPEG/PNG) with a clear error.
pub fn load_image(path: &std::path::Path) -> Result<image::DynamicImage> {
    image::ImageReader::open(path)
        .map_err(|e| DenoiseError::Image { path: path.display().to_string(), msg: e.to_string() })?
        .with_guessed_format()
        .map_err(|e| DenoiseError::Image { path: path.display().to_string(), msg: e.to_string() })?
        .decode()
        .map_err(|e| DenoiseError::Image { path: path.display().to_string(), msg: e.to_string() })
}
