//! all-MiniLM-L6-v2 sentence embeddings with our BERT encoder ([`super::bert::BertEncoder`], the
//! same computation as candle's `BertModel` with a vectorised GELU): mean pooling over the attention
//! mask, L2 normalisation (as sentence-transformers). The tokenizer.json's fixed padding to 128 is
//! replaced by batch-longest padding, and inputs are truncated to `max_seq_len` (256) word pieces.
use super::bert::{BertConfig, BertEncoder};
use super::weights::Weights;
use super::{DenoiseError, Result};
use candle_core::{DType, Device, Tensor};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The network under the pooling: ours, or candle's `BertModel` (the baseline of tests and
/// `bench embed`).
enum Backbone {
    Ours(BertEncoder),
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
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path, model_id: &str, max_seq_len: usize, batch: usize, device: &Device) -> Result<Self> {
        Self::load_with(dir, model_id, max_seq_len, batch, device, false)
    }

    /// The same files through candle's `BertModel` (the baseline that tests and `bench embed`
    /// compare our encoder with).
    pub fn load_upstream(dir: &Path, model_id: &str, max_seq_len: usize, batch: usize, device: &Device) -> Result<Self> {
        Self::load_with(dir, model_id, max_seq_len, batch, device, true)
    }

    fn load_with(dir: &Path, model_id: &str, max_seq_len: usize, batch: usize, device: &Device, upstream: bool) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg_text = std::fs::read_to_string(&cfg_path)
            .map_err(|source| DenoiseError::Io { path: cfg_path.display().to_string(), source })?;
        let bad_config = |e: serde_json::Error| DenoiseError::Config(format!("{}: {e}", cfg_path.display()));
        let cfg: BertConfig = serde_json::from_str(&cfg_text).map_err(bad_config)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| DenoiseError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        tokenizer.with_padding(Some(PaddingParams {
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
        let model = if upstream {
            let cfg: candle_transformers::models::bert::Config = serde_json::from_str(&cfg_text).map_err(bad_config)?;
            let Weights::Dense(vb) = weights else {
                return Err(DenoiseError::Config("candle's BertModel needs dense weights".into()));
            };
            Backbone::Upstream(candle_transformers::models::bert::BertModel::load(vb, &cfg)?)
        } else {
            Backbone::Ours(BertEncoder::new(&cfg, &weights)?)
        };
        Ok(Self { model, tokenizer, device: device.clone(), model_id: model_id.to_string(), batch: batch.max(1), dim })
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
        Self::load_with(&dir, &model.id, cfg.max_seq_len, cfg.embed_batch, &Device::Cpu, upstream)
    }

    /// Word pieces of `text` after truncation, [CLS] and [SEP] included.
    pub fn token_count(&self, text: &str) -> Result<usize> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| DenoiseError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().len())
    }

    /// Embedding size (384 for MiniLM).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One forward pass over `texts`: (n, dim) L2-normalised embeddings.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Tensor> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| DenoiseError::Tokenizer(e.to_string()))?;
        let ids: Vec<Tensor> =
            enc.iter().map(|e| Tensor::new(e.get_ids(), &self.device)).collect::<candle_core::Result<_>>()?;
        let mask: Vec<Tensor> = enc
            .iter()
            .map(|e| Tensor::new(e.get_attention_mask(), &self.device))
            .collect::<candle_core::Result<_>>()?;
        let ids = Tensor::stack(&ids, 0)?;
        let mask = Tensor::stack(&mask, 0)?;
        let hidden = match &self.model {
            Backbone::Ours(m) => m.forward(&ids, &mask)?,
            Backbone::Upstream(m) => m.forward(&ids, &ids.zeros_like()?, Some(&mask))?,
        };
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&count)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?)
    }

    /// Embeds any number of texts, `self.batch` at a time; texts are grouped by length so that a
    /// batch pads little, and the rows come back in input order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(self.batch) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let rows = self.embed_batch(&batch)?.to_vec2::<f32>()?;
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
