//! all-MiniLM-L6-v2 sentence embeddings with our BERT encoder over packed sentences
//! ([`super::packed_bert::PackedBert`]: candle's `BertModel` computation without padding, f32 or
//! int8 linears): mean pooling over each sentence's word pieces, L2 normalisation (as
//! sentence-transformers). Inputs are truncated to `max_seq_len` (256) word pieces. candle's
//! `BertModel` (batch-longest padding) stays available as the baseline.
use super::bert::BertConfig;
use super::packed_bert::{PackedBert, Precision};
use super::weights::Weights;
use super::{DenoiseError, Result};
use candle_core::{DType, Device, Tensor};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Inputs whose activations set the int8 encoder's smoothing (SmoothQuant calibration): the kinds
/// of text the appliance embeds (product titles, merchant descriptions, captions, promotional noise)
/// and everyday sentences. None of them is used by the tests or benchmarks that check the result.
const CALIBRATION: &[&str] = &[
    "Slim-fit jeans in stretch denim with a high waist and five pockets.",
    "Soft knitted cardigan with buttons down the front and ribbed cuffs.",
    "a woman wearing a red dress standing in front of a white wall",
    "a pair of white sneakers on a wooden floor",
    "Stainless steel water bottle, 750 ml, keeps drinks cold for 24 hours.",
    "Baby stroller with a reclining seat, a sun canopy and a large basket.",
    "HOT DEAL!!! buy now, best price guaranteed, free delivery",
    "100% cotton",
    "Machine wash at 40 degrees.",
    "Organic shampoo for dry hair with argan oil, 250 ml.",
    "Wireless headphones with noise cancelling and a 30-hour battery.",
    "The store opens at nine and closes at six on weekdays.",
    "She bought a loaf of bread and some fresh vegetables at the market.",
    "Dogs are playing in the park while children ride their bikes.",
    "The meeting was moved to Thursday afternoon.",
    "Lined parka with a detachable hood, zip pockets and adjustable cuffs.",
    "Set of three ceramic bowls, dishwasher safe.",
    "a close up of a blue t-shirt with a printed logo",
    "Trainers",
    "Regular fit. Round neck. Short sleeves. Printed motif at the front.",
    "limited offer sale sale sale cheap cheap",
    "Football boots with a firm-ground sole for natural grass pitches.",
    "A quiet evening with a book and a cup of tea.",
    "Leather handbag with an adjustable shoulder strap and an inner zip compartment.",
];

/// The network under the pooling: ours, or candle's `BertModel` (the baseline of tests and
/// `bench embed`).
enum Backbone {
    Ours(PackedBert),
    Upstream(candle_transformers::models::bert::BertModel),
}

/// A loaded sentence encoder.
pub struct TextEncoder {
    model: Backbone,
    tokenizer: Tokenizer,
    device: Device,
    /// Manifest id, stored with the text features.
    pub model_id: String,
    /// Sentences per forward pass in [`TextEncoder::embed`].
    pub batch: usize,
    dim: usize,
}

impl TextEncoder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir` (f32).
    pub fn load(dir: &Path, model_id: &str, max_seq_len: usize, batch: usize, device: &Device) -> Result<Self> {
        Self::load_with(dir, model_id, max_seq_len, batch, device, Some(Precision::F32))
    }

    /// The same files through candle's `BertModel` (the baseline that tests and `bench embed`
    /// compare our encoder with).
    pub fn load_upstream(
        dir: &Path,
        model_id: &str,
        max_seq_len: usize,
        batch: usize,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with(dir, model_id, max_seq_len, batch, device, None)
    }

    /// `precision`: our encoder's linears, or `None` for candle's `BertModel`. The id of an int8
    /// encoder is the manifest id + "+int8", so stored features say which numbers made them.
    fn load_with(
        dir: &Path,
        model_id: &str,
        max_seq_len: usize,
        batch: usize,
        device: &Device,
        precision: Option<Precision>,
    ) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg_text = std::fs::read_to_string(&cfg_path)
            .map_err(|source| DenoiseError::Io { path: cfg_path.display().to_string(), source })?;
        let bad_config = |e: serde_json::Error| DenoiseError::Config(format!("{}: {e}", cfg_path.display()));
        let cfg: BertConfig = serde_json::from_str(&cfg_text).map_err(bad_config)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| DenoiseError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        // Our encoder packs sentences end to end; candle's pads to the batch's longest.
        tokenizer.with_padding(precision.is_none().then(|| PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "[PAD]".into(),
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_seq_len, ..Default::default() }))
            .map_err(|e| DenoiseError::Tokenizer(e.to_string()))?;
        let weights = Weights::from_safetensors(&dir.join("model.safetensors"), DType::F32, device)?;
        let dim = cfg.hidden_size;
        let (model, model_id) = match precision {
            None => {
                let cfg: candle_transformers::models::bert::Config =
                    serde_json::from_str(&cfg_text).map_err(bad_config)?;
                let Weights::Dense(vb) = weights else {
                    return Err(DenoiseError::Config("candle's BertModel needs dense weights".into()));
                };
                (
                    Backbone::Upstream(candle_transformers::models::bert::BertModel::load(vb, &cfg)?),
                    model_id.to_string(),
                )
            }
            Some(p) => {
                if p == Precision::Int8 && !crate::kernels::qgemm::vnni_available() {
                    tracing::warn!(
                        "denoise.text_precision = \"int8\" without AVX-512 VNNI on this CPU: the portable int8 kernel \
                         is slower than f32 here (docs/denoise.md); consider \"f32\""
                    );
                }
                let id = match p {
                    Precision::F32 => model_id.to_string(),
                    Precision::Int8 => format!("{model_id}+int8"),
                };
                let calibration = match p {
                    Precision::F32 => Vec::new(),
                    Precision::Int8 => tokenizer
                        .encode_batch(CALIBRATION.to_vec(), true)
                        .map_err(|e| DenoiseError::Tokenizer(e.to_string()))?
                        .iter()
                        .map(|e| e.get_ids().to_vec())
                        .collect(),
                };
                (Backbone::Ours(PackedBert::new(&cfg, &weights, p, &calibration)?), id)
            }
        };
        Ok(Self { model, tokenizer, device: device.clone(), model_id, batch: batch.max(1), dim })
    }

    /// Loads the configured encoder after verifying its files (clear error naming a missing or
    /// mismatching file and its expected sha256).
    pub fn from_config(cfg: &crate::config::DenoiseConfig) -> Result<Self> {
        Self::from_config_with(cfg, false)
    }

    /// [`TextEncoder::from_config`], with candle's `BertModel` when `upstream` (the baseline).
    pub fn from_config_with(cfg: &crate::config::DenoiseConfig, upstream: bool) -> Result<Self> {
        let manifest = crate::modelfiles::Manifest::builtin()?;
        let model = manifest.get(&cfg.text_model)?;
        let dir = crate::modelfiles::require(model, &cfg.models_dir)?;
        let precision = (!upstream).then_some(cfg.text_precision);
        Self::load_with(&dir, &model.id, cfg.max_seq_len, cfg.embed_batch, &Device::Cpu, precision)
    }

    /// Our encoder's precision (`None`: candle's `BertModel`).
    pub fn precision(&self) -> Option<Precision> {
        match &self.model {
            Backbone::Ours(m) => Some(m.precision()),
            Backbone::Upstream(_) => None,
        }
    }

    /// Word pieces of `text` after truncation, `[CLS]` and `[SEP]` included.
    pub fn token_count(&self, text: &str) -> Result<usize> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| DenoiseError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().len())
    }

    /// Embedding size (384 for MiniLM).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One forward pass over `texts`: their L2-normalised embeddings (`dim` values each).
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let enc =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| DenoiseError::Tokenizer(e.to_string()))?;
        match &self.model {
            Backbone::Ours(m) => Ok(m.embed(&enc.iter().map(|e| e.get_ids().to_vec()).collect::<Vec<_>>())?),
            Backbone::Upstream(m) => Ok(self.embed_upstream(m, &enc)?.to_vec2::<f32>()?),
        }
    }

    /// candle's `BertModel` over the padded batch, then masked mean pooling and L2 normalisation.
    fn embed_upstream(
        &self,
        m: &candle_transformers::models::bert::BertModel,
        enc: &[tokenizers::Encoding],
    ) -> candle_core::Result<Tensor> {
        let ids: Vec<Tensor> =
            enc.iter().map(|e| Tensor::new(e.get_ids(), &self.device)).collect::<candle_core::Result<_>>()?;
        let mask: Vec<Tensor> = enc
            .iter()
            .map(|e| Tensor::new(e.get_attention_mask(), &self.device))
            .collect::<candle_core::Result<_>>()?;
        let ids = Tensor::stack(&ids, 0)?;
        let mask = Tensor::stack(&mask, 0)?;
        let hidden = m.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&count)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norm)
    }

    /// Embeds any number of texts, `self.batch` at a time; texts are grouped by length so that a
    /// batch pads little, and the rows come back in input order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(self.batch) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let rows = self.embed_batch(&batch)?;
            for (&i, row) in chunk.iter().zip(rows) {
                out[i] = row;
            }
        }
        Ok(out)
    }
}

/// Cosine similarity (dot product of unit vectors; computed in full for safety).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
