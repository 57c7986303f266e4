use super::{Issues, Validate};
use crate::denoise::packed_bert::Precision;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// BLIP captioning, description cleaning and feature extraction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DenoiseConfig {
    /// Directory with model files named in `models/manifest.toml`.
    pub models_dir: PathBuf,
    /// The model files (text encoder, and the captioner when captioning is enabled) must be
    /// installed: `doctor` fails without them. When false (the default) a missing file is a
    /// warning: the denoiser runs degraded. A file present with the wrong checksum always fails.
    pub require_models: bool,
    /// Caption product photos with BLIP (needs the BLIP model files; without them cleaning runs degraded).
    pub caption_enabled: bool,
    /// Manifest id of the captioning model: `blip-large-q4k`, `blip-large-q8_0` (GGUF, CPU) or
    /// `blip-large-f16` (safetensors, for CUDA).
    pub caption_model: String,
    /// Device for the captioner: "cpu", or "cuda" (GPU 0 when built with the `cuda` feature; otherwise
    /// the CPU is used and a log line says so).
    pub device: String,
    /// Greedy decoding stops at `[SEP]` or after this many generated tokens.
    pub max_caption_tokens: usize,
    /// Images encoded (and decoded) together in one batch.
    pub caption_batch: usize,
    /// Manifest id of the sentence encoder.
    pub text_model: String,
    /// Sentences embedded together in one batch.
    pub embed_batch: usize,
    /// Longest tokenized input for the sentence encoder (word pieces).
    pub max_seq_len: usize,
    /// Numbers of the sentence encoder's linear layers: "f32" (the checkpoint's; matches
    /// sentence-transformers to 4 decimals) or "int8" (about 2.5x faster on CPUs with AVX-512 VNNI,
    /// embeddings within about 0.01 cosine of f32's; stored features are tagged "+int8").
    pub text_precision: Precision,
    /// A phrase is dropped when its MiniLM cosine to caption + title is below this (only with a caption).
    pub min_phrase_similarity: f32,
    /// ... and its cosine to the mean of the description's other phrases is below this
    /// (1.0 = similarity alone decides).
    pub min_phrase_coherence: f32,
    /// A phrase is keyword stuffing when one word occurs more than this many times in it.
    pub max_word_repeats: usize,
    /// ... and that word is at least this share of the phrase's words.
    pub max_word_share: f32,
    /// A phrase is shouting when this fraction (or more) of its letters are capitals (3+ words of 2+ letters).
    pub max_caps_ratio: f32,
    /// A phrase with a run of more than this many `!`/`?`/`*`/`$` characters is dropped.
    pub max_punct_run: usize,
    /// A phrase with this many or more promotional terms is dropped.
    pub max_promo_terms: usize,
    /// Generic promotional terms (lower case; phrases of several words allowed).
    pub promo_terms: Vec<String>,
}

impl Default for DenoiseConfig {
    fn default() -> Self {
        Self {
            models_dir: PathBuf::from("./models"),
            require_models: false,
            caption_enabled: true,
            caption_model: "blip-large-q4k".into(),
            device: "cpu".into(),
            max_caption_tokens: 30,
            caption_batch: 2,
            text_model: "all-minilm-l6-v2".into(),
            embed_batch: 32,
            max_seq_len: 256,
            text_precision: Precision::F32,
            min_phrase_similarity: 0.15,
            min_phrase_coherence: 0.4,
            max_word_repeats: 2,
            max_word_share: 0.35,
            max_caps_ratio: 0.7,
            max_punct_run: 2,
            max_promo_terms: 1,
            promo_terms: default_promo_terms(),
        }
    }
}

/// The built-in list of generic promotional terms.
pub fn default_promo_terms() -> Vec<String> {
    [
        "best seller",
        "bestseller",
        "best price",
        "lowest price",
        "free shipping",
        "free delivery",
        "buy now",
        "order now",
        "shop now",
        "limited time",
        "limited offer",
        "hot sale",
        "sale",
        "discount",
        "% off",
        "cheap",
        "deal",
        "deals",
        "offer",
        "promo",
        "coupon",
        "clearance",
        "don't miss",
        "dont miss",
        "must have",
        "must-have",
        "top quality",
        "100% satisfaction",
        "guaranteed",
        "trending",
        "hurry",
        "click",
        "amazing",
        "wow",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Validate for DenoiseConfig {
    fn validate(&self, issues: &mut Issues) {
        issues.check(!self.caption_model.is_empty(), "denoise.caption_model", "must not be empty");
        issues.check(matches!(self.device.as_str(), "cpu" | "cuda"), "denoise.device", "\"cpu\" or \"cuda\"");
        issues.check(!self.text_model.is_empty(), "denoise.text_model", "must not be empty");
        issues.check((1..=256).contains(&self.max_caption_tokens), "denoise.max_caption_tokens", "between 1 and 256");
        issues.check((1..=64).contains(&self.caption_batch), "denoise.caption_batch", "between 1 and 64");
        issues.check((1..=1024).contains(&self.embed_batch), "denoise.embed_batch", "between 1 and 1024");
        issues.check((8..=512).contains(&self.max_seq_len), "denoise.max_seq_len", "between 8 and 512");
        issues.check(
            (-1.0..=1.0).contains(&self.min_phrase_similarity),
            "denoise.min_phrase_similarity",
            "a cosine, between -1 and 1",
        );
        issues.check(
            (-1.0..=1.0).contains(&self.min_phrase_coherence),
            "denoise.min_phrase_coherence",
            "a cosine, between -1 and 1",
        );
        issues.check(self.max_word_repeats >= 1, "denoise.max_word_repeats", "at least 1");
        issues.check(self.max_word_share > 0.0 && self.max_word_share <= 1.0, "denoise.max_word_share", "in (0, 1]");
        issues.check(self.max_caps_ratio > 0.0 && self.max_caps_ratio <= 1.0, "denoise.max_caps_ratio", "in (0, 1]");
        issues.check(self.max_punct_run >= 1, "denoise.max_punct_run", "at least 1");
        issues.check(self.max_promo_terms >= 1, "denoise.max_promo_terms", "at least 1");
        issues.check(
            self.promo_terms.iter().all(|t| !t.trim().is_empty() && t.to_lowercase() == *t),
            "denoise.promo_terms",
            "terms must be non-empty and lower case",
        );
    }
}
