//! BLIP captioning, description cleaning (CapFilt-style), MiniLM text and BLIP image features.
//!
//! - [`blip`]: the captioner (our vision encoder and cached batched text decoder; candle's
//!   upstream model only as the baseline),
//! - [`vision`], [`bert`], [`gelu`], [`softmax`]: BLIP's ViT, BERT blocks (BLIP's decoder) and the
//!   vectorised exact GELU and softmax they use,
//! - [`embed`]: all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2 norm) through
//!   [`packed_bert`], a BERT encoder over unpadded sentences with f32 or int8 ([`qgemm`]) linears,
//! - [`text`]: splitting a merchant description into phrases and dropping noise,
//! - [`features`]: catalogue readers (H&M, Myntra) and item text feature builders,
//! - [`robustness`]: injected-noise check of the cleaning on real descriptions,
//! - [`pipeline`]: a whole catalogue through captioning, cleaning, embedding and the store,
//! - [`testutil`]: random BLIP checkpoints in the real tensor layout, for tests and benchmarks.
pub mod bert;
pub mod blip;
pub mod embed;
pub mod features;
pub mod gelu;
pub mod packed_bert;
pub mod pipeline;
pub mod qgemm;
pub mod robustness;
pub mod softmax;
pub mod testutil;
pub mod text;
pub mod vision;
pub mod weights;

pub use blip::{Caption, Captioner, DecodeMode};
pub use embed::TextEncoder;
pub use text::{clean_description, denoise, Denoised, PhraseDecision};

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
}

pub type Result<T> = std::result::Result<T, DenoiseError>;

/// The device named in the configuration ("cpu" or "cuda"). Without the `cuda` feature, or when no
/// GPU answers, the CPU is used and a log line says so.
pub fn select_device(name: &str) -> candle_core::Device {
    if name == "cuda" {
        if cfg!(feature = "cuda") {
            match candle_core::Device::new_cuda(0) {
                Ok(d) => return d,
                Err(e) => tracing::warn!(error = %e, "CUDA device unavailable, captioning on the CPU"),
            }
        } else {
            tracing::warn!("built without the `cuda` feature, captioning on the CPU");
        }
    }
    candle_core::Device::Cpu
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
