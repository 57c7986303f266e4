//! BLIP captioning on candle: our vision encoder ([`super::vision`]) and our own text decoder over
//! the same weights. The decoder computes the cross-attention keys/values of the image tokens once
//! per image batch instead of at every generated token (upstream recomputes them each step), and
//! decodes a whole batch of images at once. Greedy decoding from `[DEC]` until `[SEP]` or a token cap.
//! candle's upstream models (`blip` / `quantized_blip`) are built only on demand, as the baseline
//! that tests and benchmarks compare against.
use super::bert::{Attention, FeedForward};
use super::vision::VisionEncoder;
use super::weights::{Lin, Weights};
use super::DenoiseError;
use crate::kernels::gelu::activate;
use candle_core::{DType, Device, IndexOp, Module, Result as CResult, Tensor, D};
use candle_nn::{Embedding, LayerNorm};
use candle_transformers::models::{blip, blip_text, quantized_blip};
use image::DynamicImage;
use std::path::Path;
use std::time::Instant;

/// BLIP's `[DEC]` token: decoding starts from it.
pub const BOS_TOKEN: u32 = 30522;
/// BLIP's `[SEP]` token: decoding stops at it.
pub const SEP_TOKEN: u32 = 102;
/// CLIP normalisation used by BLIP's image processor.
pub const IMAGE_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const IMAGE_STD: [f32; 3] = [0.26862954, 0.261_302_6, 0.275_777_1];

/// Resize to fill `size`x`size` (triangle filter, centre crop), scale to \[0,1\], CLIP-normalise.
/// Returns (3, size, size) f32.
pub fn preprocess(img: &DynamicImage, size: usize, device: &Device) -> CResult<Tensor> {
    let img = img.resize_to_fill(size as u32, size as u32, image::imageops::FilterType::Triangle);
    let rgb = img.to_rgb8();
    let data = rgb.into_raw();
    let t = Tensor::from_vec(data, (size, size, 3), device)?.permute((2, 0, 1))?;
    let mean = Tensor::new(&IMAGE_MEAN, device)?.reshape((3, 1, 1))?;
    let std = Tensor::new(&IMAGE_STD, device)?.reshape((3, 1, 1))?;
    (t.to_dtype(DType::F32)? / 255.)?.broadcast_sub(&mean)?.broadcast_div(&std)
}

/// The upstream candle model (vision encoder + the upstream, uncached text decoder).
enum Upstream {
    Dense(blip::BlipForConditionalGeneration),
    Quant(quantized_blip::BlipForConditionalGeneration),
}

impl Upstream {
    fn vision(&self, pixels: &Tensor) -> CResult<Tensor> {
        match self {
            Upstream::Dense(m) => m.vision_model().forward(pixels),
            Upstream::Quant(m) => m.vision_model().forward(pixels),
        }
    }
    fn reset(&mut self) {
        match self {
            Upstream::Dense(m) => m.reset_kv_cache(),
            Upstream::Quant(m) => m.reset_kv_cache(),
        }
    }
    fn decode_step(&mut self, ids: &Tensor, image_embeds: &Tensor) -> CResult<Tensor> {
        match self {
            Upstream::Dense(m) => m.text_decoder().forward(ids, image_embeds),
            Upstream::Quant(m) => m.text_decoder().forward(ids, image_embeds),
        }
    }
}

struct DecoderLayer {
    self_attn: Attention,
    cross_attn: Attention,
    ffn: FeedForward,
}

/// Per-batch decoding state: self-attention caches grow by one token per step; cross-attention
/// keys/values of the image tokens are computed once in [`CachedDecoder::start`].
pub struct DecodeState {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    past_len: usize,
}

/// BLIP's text decoder (`text_decoder.*` tensors), with the image keys/values cached.
pub struct CachedDecoder {
    word_emb: Embedding,
    pos_emb: Embedding,
    emb_ln: LayerNorm,
    layers: Vec<DecoderLayer>,
    head_dense: Lin,
    head_act: candle_nn::Activation,
    head_ln: LayerNorm,
    head_decoder: Lin,
    max_positions: usize,
}

impl CachedDecoder {
    /// Loads from the weights at prefix `text_decoder`.
    pub fn new(cfg: &blip_text::Config, w: &Weights) -> CResult<Self> {
        let h = cfg.hidden_size;
        let bert = w.pp("bert");
        let emb = bert.pp("embeddings");
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = bert.pp("encoder").pp("layer").pp(i);
            let (heads, eps) = (cfg.num_attention_heads, cfg.layer_norm_eps);
            layers.push(DecoderLayer {
                self_attn: Attention::new(h, h, heads, eps, &l.pp("attention"))?,
                cross_attn: Attention::new(h, cfg.encoder_hidden_size, heads, eps, &l.pp("crossattention"))?,
                ffn: FeedForward::new(h, cfg.intermediate_size, cfg.hidden_act, eps, &l)?,
            });
        }
        let pred = w.pp("cls").pp("predictions");
        Ok(Self {
            word_emb: emb.pp("word_embeddings").embedding(cfg.vocab_size, h)?,
            pos_emb: emb.pp("position_embeddings").embedding(cfg.max_position_embeddings, h)?,
            emb_ln: emb.pp("LayerNorm").layer_norm(h, cfg.layer_norm_eps)?,
            layers,
            head_dense: pred.pp("transform").pp("dense").linear(h, h)?,
            head_act: cfg.hidden_act,
            head_ln: pred.pp("transform").pp("LayerNorm").layer_norm(h, cfg.layer_norm_eps)?,
            head_decoder: pred.lm_head(h, cfg.vocab_size)?,
            max_positions: cfg.max_position_embeddings,
        })
    }

    /// Computes the cross-attention keys/values of `image_embeds` (b, n, enc_h) for every layer.
    pub fn start(&self, image_embeds: &Tensor) -> CResult<DecodeState> {
        let cross_kv = self.layers.iter().map(|l| l.cross_attn.kv(image_embeds)).collect::<CResult<Vec<_>>>()?;
        Ok(DecodeState { self_kv: vec![None; self.layers.len()], cross_kv, past_len: 0 })
    }

    /// Feeds `ids` (b, seq) and returns the logits (b, seq, vocab).
    pub fn step(&self, st: &mut DecodeState, ids: &Tensor) -> CResult<Tensor> {
        let (_b, seq) = ids.dims2()?;
        if st.past_len + seq > self.max_positions {
            candle_core::bail!("caption longer than {} positions", self.max_positions)
        }
        let dev = ids.device();
        let pos = Tensor::arange(st.past_len as u32, (st.past_len + seq) as u32, dev)?.unsqueeze(0)?;
        let x = self.word_emb.forward(ids)?.broadcast_add(&self.pos_emb.forward(&pos)?)?;
        let mut x = x.apply(&self.emb_ln)?;
        // Causal mask over (seq, past + seq); not needed for a single new token.
        let mask = if seq > 1 {
            let past = st.past_len;
            let total = past + seq;
            let m: Vec<f32> = (0..seq)
                .flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0. }))
                .collect();
            Some(Tensor::from_vec(m, (seq, total), dev)?.to_dtype(x.dtype())?)
        } else {
            None
        };
        for (i, l) in self.layers.iter().enumerate() {
            let (k, v) = l.self_attn.kv(&x)?;
            let (k, v) = match &st.self_kv[i] {
                None => (k, v),
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            };
            let a = l.self_attn.attend(&x, &k, &v, mask.as_ref())?;
            st.self_kv[i] = Some((k, v));
            let (ck, cv) = &st.cross_kv[i];
            let a = l.cross_attn.attend(&a, ck, cv, None)?;
            x = l.ffn.forward(&a)?;
        }
        st.past_len += seq;
        activate(self.head_act, &x.apply(&self.head_dense)?)?.apply(&self.head_ln)?.apply(&self.head_decoder)
    }

    /// Greedy decoding of a batch: one row of tokens per image (without `[DEC]` and `[SEP]`).
    pub fn generate(&self, image_embeds: &Tensor, max_tokens: usize) -> CResult<Vec<Vec<u32>>> {
        self.generate_with(image_embeds, max_tokens, true)
    }

    /// Greedy decoding; `stop_at_sep = false` decodes exactly `max_tokens` (benchmarks).
    pub fn generate_with(&self, image_embeds: &Tensor, max_tokens: usize, stop_at_sep: bool) -> CResult<Vec<Vec<u32>>> {
        let b = image_embeds.dim(0)?;
        let dev = image_embeds.device();
        let mut st = self.start(image_embeds)?;
        let mut out = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let mut ids = Tensor::new(vec![BOS_TOKEN; b], dev)?.reshape((b, 1))?;
        for _ in 0..max_tokens {
            let logits = self.step(&mut st, &ids)?;
            let last = logits.i((.., logits.dim(1)? - 1, ..))?;
            let next = last.to_dtype(DType::F32)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
            for (i, &t) in next.iter().enumerate() {
                if !done[i] {
                    if stop_at_sep && t == SEP_TOKEN {
                        done[i] = true;
                    } else {
                        out[i].push(t);
                    }
                }
            }
            if done.iter().all(|d| *d) {
                break;
            }
            ids = Tensor::new(next, dev)?.reshape((b, 1))?;
        }
        Ok(out)
    }
}

/// How the decoder runs (the benchmark and tests compare them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    /// Our decoder: image keys/values cached, whole batch at once.
    Cached,
    /// Upstream candle decoder, one image at a time, image keys/values recomputed each token.
    Uncached,
}

/// One captioned image.
#[derive(Debug, Clone)]
pub struct Caption {
    pub text: String,
    pub tokens: Vec<u32>,
    /// Mean of the vision encoder's patch tokens (CLS excluded), L2-normalised.
    pub feature: Vec<f32>,
    /// This image's share of the batch's vision-encoder time.
    pub vision_ms: f64,
    /// This image's share of the batch's decoding time.
    pub decode_ms: f64,
}

/// A loaded BLIP captioner.
pub struct Captioner {
    /// candle's model, built on first use by [`DecodeMode::Uncached`] or [`Captioner::encode_upstream`].
    upstream: Option<Upstream>,
    weights: Weights,
    config: blip::Config,
    vision: VisionEncoder,
    decoder: CachedDecoder,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
    dtype: DType,
    image_size: usize,
    /// Manifest id, stored with the image features.
    pub model_id: String,
    pub max_tokens: usize,
    pub batch: usize,
}

impl Captioner {
    /// Builds a captioner from weights in either format, a BLIP config and a tokenizer.
    pub fn from_weights(
        w: &Weights,
        cfg: &blip::Config,
        tokenizer: tokenizers::Tokenizer,
        model_id: &str,
        max_tokens: usize,
        batch: usize,
    ) -> Result<Self, DenoiseError> {
        let vision = VisionEncoder::new(&cfg.vision_config, &w.pp("vision_model"))?;
        let decoder = CachedDecoder::new(&cfg.text_config, &w.pp("text_decoder"))?;
        Ok(Self {
            upstream: None,
            weights: w.clone(),
            config: cfg.clone(),
            vision,
            decoder,
            tokenizer,
            device: w.device().clone(),
            dtype: w.dtype(),
            image_size: cfg.vision_config.image_size,
            model_id: model_id.to_string(),
            max_tokens: max_tokens.max(1),
            batch: batch.max(1),
        })
    }

    /// Loads model files from a directory: `<weights>` (`.gguf` or `.safetensors`) and `tokenizer.json`.
    pub fn load_files(
        weights: &Path,
        tokenizer: &Path,
        cfg: &blip::Config,
        device: &Device,
        model_id: &str,
        max_tokens: usize,
        batch: usize,
    ) -> Result<Self, DenoiseError> {
        let tok = tokenizers::Tokenizer::from_file(tokenizer)
            .map_err(|e| DenoiseError::Tokenizer(format!("{}: {e}", tokenizer.display())))?;
        let w = if weights.extension().is_some_and(|e| e == "gguf") {
            Weights::from_gguf(weights, device)?
        } else {
            let dtype = if device.is_cuda() { DType::F16 } else { DType::F32 };
            Weights::from_safetensors(weights, dtype, device)?
        };
        Self::from_weights(&w, cfg, tok, model_id, max_tokens, batch)
    }

    /// Loads the configured captioner (BLIP-large), verifying its files first: a missing or
    /// mismatching file gives an error naming the file and its expected sha256.
    pub fn from_config(cfg: &crate::config::DenoiseConfig) -> Result<Self, DenoiseError> {
        let manifest = crate::modelfiles::Manifest::builtin()?;
        let model = manifest.get(&cfg.caption_model)?;
        let dir = crate::modelfiles::require(model, &cfg.models_dir)?;
        let ext = if model.format == "gguf" { "gguf" } else { "safetensors" };
        let weights = model
            .file_with_ext(ext)
            .ok_or_else(|| DenoiseError::Config(format!("manifest entry {} names no .{ext} file", model.id)))?;
        let device = super::select_device(&cfg.device);
        Self::load_files(
            &dir.join(&weights.name),
            &dir.join("tokenizer.json"),
            &blip::Config::image_captioning_large(),
            &device,
            &model.id,
            cfg.max_caption_tokens,
            cfg.caption_batch,
        )
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Preprocesses one image for this model.
    pub fn preprocess(&self, img: &DynamicImage) -> CResult<Tensor> {
        preprocess(img, self.image_size, &self.device)
    }

    /// Runs the vision encoder on a batch (b, 3, s, s): (b, tokens, hidden), CLS first.
    pub fn encode(&self, pixels: &Tensor) -> CResult<Tensor> {
        self.vision.forward(&pixels.to_dtype(self.dtype)?)
    }

    /// The same with candle's upstream vision model (the baseline of tests and benchmarks).
    pub fn encode_upstream(&mut self, pixels: &Tensor) -> CResult<Tensor> {
        let px = pixels.to_dtype(self.dtype)?;
        self.upstream()?.vision(&px)
    }

    fn upstream(&mut self) -> CResult<&mut Upstream> {
        let up = match self.upstream.take() {
            Some(up) => up,
            None => match &self.weights {
                Weights::Dense(vb) => {
                    Upstream::Dense(blip::BlipForConditionalGeneration::new(&self.config, vb.clone())?)
                }
                Weights::Quant(vb) => {
                    Upstream::Quant(quantized_blip::BlipForConditionalGeneration::new(&self.config, vb.clone())?)
                }
            },
        };
        Ok(self.upstream.insert(up))
    }

    /// Image features from the vision encoder output: mean of the patch tokens (CLS excluded),
    /// L2-normalised, f32.
    pub fn pool(embeds: &Tensor) -> CResult<Vec<Vec<f32>>> {
        let n = embeds.dim(1)?;
        let patches = embeds.narrow(1, 1, n - 1)?.to_dtype(DType::F32)?.mean(1)?;
        let norm = patches.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        patches.broadcast_div(&norm)?.to_vec2::<f32>()
    }

    /// Greedy decoding of a batch of encoded images.
    pub fn generate(&mut self, embeds: &Tensor, max_tokens: usize, mode: DecodeMode) -> CResult<Vec<Vec<u32>>> {
        self.generate_inner(embeds, max_tokens, mode, true)
    }

    /// Decodes exactly `tokens` tokens per image, ignoring `[SEP]` (benchmarks).
    pub fn generate_fixed(&mut self, embeds: &Tensor, tokens: usize, mode: DecodeMode) -> CResult<Vec<Vec<u32>>> {
        self.generate_inner(embeds, tokens, mode, false)
    }

    fn generate_inner(
        &mut self,
        embeds: &Tensor,
        max_tokens: usize,
        mode: DecodeMode,
        stop: bool,
    ) -> CResult<Vec<Vec<u32>>> {
        match mode {
            DecodeMode::Cached => self.decoder.generate_with(embeds, max_tokens, stop),
            DecodeMode::Uncached => {
                let b = embeds.dim(0)?;
                let device = self.device.clone();
                let upstream = self.upstream()?;
                let mut all = Vec::with_capacity(b);
                for i in 0..b {
                    let e = embeds.narrow(0, i, 1)?;
                    upstream.reset();
                    let mut out = Vec::new();
                    let mut tok = BOS_TOKEN;
                    for _ in 0..max_tokens {
                        let ids = Tensor::new(&[[tok]], &device)?;
                        let logits = upstream.decode_step(&ids, &e)?;
                        let last = logits.i((0, logits.dim(1)? - 1))?;
                        tok = last.to_dtype(DType::F32)?.argmax(D::Minus1)?.to_scalar::<u32>()?;
                        if stop && tok == SEP_TOKEN {
                            break;
                        }
                        out.push(tok);
                    }
                    upstream.reset();
                    all.push(out);
                }
                Ok(all)
            }
        }
    }

    /// Turns token ids into text (special tokens skipped).
    pub fn detokenize(&self, tokens: &[u32]) -> Result<String, DenoiseError> {
        self.tokenizer.decode(tokens, true).map_err(|e| DenoiseError::Tokenizer(e.to_string()))
    }

    /// Captions images in batches of `self.batch`.
    pub fn caption(&mut self, images: &[DynamicImage]) -> Result<Vec<Caption>, DenoiseError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch) {
            let t0 = Instant::now();
            let px = chunk.iter().map(|im| self.preprocess(im)).collect::<CResult<Vec<_>>>()?;
            let px = Tensor::stack(&px, 0)?;
            let embeds = self.encode(&px)?;
            let feats = Self::pool(&embeds)?;
            let vision_ms = t0.elapsed().as_secs_f64() * 1e3 / chunk.len() as f64;
            let t1 = Instant::now();
            let toks = self.generate(&embeds, self.max_tokens, DecodeMode::Cached)?;
            let decode_ms = t1.elapsed().as_secs_f64() * 1e3 / chunk.len() as f64;
            for (tokens, feature) in toks.into_iter().zip(feats) {
                let text = self.detokenize(&tokens)?;
                out.push(Caption { text, tokens, feature, vision_ms, decode_ms });
            }
        }
        Ok(out)
    }
}
