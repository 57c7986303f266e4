//! Random BLIP checkpoints in the real HF tensor layout (tests: tiny; benchmarks: full BLIP-large),
//! and random BERT sentence encoders (tests).
//!
//! The tensor names and shapes are taken from candle's own BLIP constructor (a recording
//! `VarBuilder` backend that allocates nothing), filled with seeded random values, and written as
//! safetensors (f32) or GGUF: each rank-2 tensor whose second dimension is a multiple of the
//! quantization block size is quantized, every other tensor is stored as F32.
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Shape, Tensor};
use candle_transformers::models::{blip, blip_text};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Records the name and shape of every tensor a model constructor asks for.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, Shape)>>>);

impl candle_nn::var_builder::SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if let Ok(mut v) = self.0.lock() {
            if !v.iter().any(|(n, _)| n == name) {
                v.push((name.to_string(), s.clone()));
            }
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("recorder cannot serve {name} without a shape")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Names and shapes of a BLIP captioning checkpoint for `cfg`, in HF layout.
pub fn blip_tensor_shapes(cfg: &blip::Config) -> candle_core::Result<Vec<(String, Shape)>> {
    let rec = Recorder::default();
    let vb = candle_nn::VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    let _model = blip::BlipForConditionalGeneration::new(cfg, vb)?;
    let v = rec.0.lock().map_err(|_| candle_core::Error::Msg("recorder poisoned".into()))?.clone();
    Ok(v)
}

/// Random f32 tensors (seeded) for every tensor of candle's `BertModel` for `cfg`, in HF layout:
/// a tiny sentence encoder for tests.
pub fn random_bert_tensors(
    cfg: &candle_transformers::models::bert::Config,
    seed: u64,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let rec = Recorder::default();
    let vb = candle_nn::VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    let _model = candle_transformers::models::bert::BertModel::load(vb, cfg)?;
    let shapes = rec.0.lock().map_err(|_| candle_core::Error::Msg("recorder poisoned".into()))?.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let v = random_values(&name, shape.elem_count(), 0.2, &mut rng);
            // The recorder answers every probe, so candle's loader takes its first guess, "bert.".
            let name = name.strip_prefix("bert.").unwrap_or(&name).to_string();
            Ok((name, Tensor::from_vec(v, shape, &Device::Cpu)?))
        })
        .collect()
}

/// A small BLIP config: `hidden` for both towers, `layers` layers each, vocab 30524 (so `[DEC]` 30522
/// and `[SEP]` 102 are valid), 384x384 images in 16x16 patches.
pub fn tiny_blip_config(hidden: usize, layers: usize) -> blip::Config {
    let text_config = blip_text::Config {
        vocab_size: 30524,
        hidden_size: hidden,
        encoder_hidden_size: hidden,
        intermediate_size: 2 * hidden,
        projection_dim: hidden,
        num_hidden_layers: layers,
        num_attention_heads: 2,
        max_position_embeddings: 64,
        hidden_act: candle_nn::Activation::Gelu,
        layer_norm_eps: 1e-12,
        is_decoder: true,
    };
    let vision_config = blip::VisionConfig {
        hidden_size: hidden,
        intermediate_size: 2 * hidden,
        projection_dim: hidden,
        num_hidden_layers: layers,
        num_attention_heads: 2,
        image_size: 384,
        patch_size: 16,
        hidden_act: candle_nn::Activation::Gelu,
        layer_norm_eps: 1e-5,
    };
    blip::Config { text_config, vision_config, projection_dim: hidden, image_text_hidden_size: hidden }
}

fn random_values(name: &str, n: usize, std: f32, rng: &mut rand::rngs::StdRng) -> Vec<f32> {
    let lname = name.to_lowercase();
    let is_norm = lname.contains("norm");
    let is_bias = name.ends_with("bias");
    (0..n)
        .map(|_| {
            // Uniform with the given standard deviation (fast; values do not matter for latency).
            let u: f32 = (rng.random::<f32>() - 0.5) * std * 3.464;
            if is_norm && !is_bias {
                1.0 + 0.1 * u / std.max(1e-6)
            } else if is_bias {
                0.1 * u
            } else {
                u
            }
        })
        .collect()
}

/// Random f32 tensors for every BLIP tensor of `cfg` (seeded).
pub fn random_blip_tensors(cfg: &blip::Config, seed: u64, std: f32) -> candle_core::Result<Vec<(String, Tensor)>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    blip_tensor_shapes(cfg)?
        .into_iter()
        .map(|(name, shape)| {
            let v = random_values(&name, shape.elem_count(), std, &mut rng);
            Ok((name, Tensor::from_vec(v, shape, &Device::Cpu)?))
        })
        .collect()
}

/// Writes a random BLIP as f32 safetensors.
pub fn write_random_blip_safetensors(cfg: &blip::Config, seed: u64, path: &Path) -> candle_core::Result<()> {
    let map: HashMap<String, Tensor> = random_blip_tensors(cfg, seed, 0.1)?.into_iter().collect();
    candle_core::safetensors::save(&map, path)
}

/// Quantizes each rank-2 tensor whose second dim is a multiple of `dtype`'s block size; the
/// others become F32.
pub fn quantize_for_gguf(t: &Tensor, dtype: GgmlDType) -> candle_core::Result<QTensor> {
    let dims = t.dims();
    if dims.len() == 2 && dims[1].is_multiple_of(dtype.block_size()) {
        QTensor::quantize(t, dtype)
    } else {
        QTensor::quantize(t, GgmlDType::F32)
    }
}

/// Writes a random BLIP as GGUF, tensor by tensor (only the quantized tensors stay in memory).
pub fn write_random_blip_gguf(cfg: &blip::Config, seed: u64, dtype: GgmlDType, path: &Path) -> candle_core::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut qs = Vec::new();
    for (name, shape) in blip_tensor_shapes(cfg)? {
        let v = random_values(&name, shape.elem_count(), 0.1, &mut rng);
        let t = Tensor::from_vec(v, shape, &Device::Cpu)?;
        qs.push((name, quantize_for_gguf(&t, dtype)?));
    }
    write_gguf(&qs, path)
}

/// Converts f32 tensors (e.g. a safetensors checkpoint) to GGUF with [`quantize_for_gguf`].
pub fn tensors_to_gguf(tensors: &[(String, Tensor)], dtype: GgmlDType, path: &Path) -> candle_core::Result<()> {
    let qs = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), quantize_for_gguf(t, dtype)?)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    write_gguf(&qs, path)
}

fn write_gguf(qs: &[(String, QTensor)], path: &Path) -> candle_core::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let refs: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
    gguf_file::write(&mut f, &[], &refs)?;
    use std::io::Write;
    f.flush()?;
    Ok(())
}

/// A BERT-style WordPiece tokenizer with BLIP's 30524 ids: `[PAD]`=0, `[UNK]`=100, `[CLS]`=101,
/// `[SEP]`=102, `[MASK]`=103, `[DEC]`=30522, `[ENC]`=30523, and made-up words `w<id>` elsewhere. Saved as
/// tokenizer.json at `path`.
pub fn write_tiny_tokenizer(path: &Path) -> Result<(), String> {
    use tokenizers::models::wordpiece::WordPiece;
    let special = [
        (0u32, "[PAD]"),
        (100, "[UNK]"),
        (101, "[CLS]"),
        (102, "[SEP]"),
        (103, "[MASK]"),
        (30522, "[DEC]"),
        (30523, "[ENC]"),
    ];
    let mut vocab = String::new();
    for id in 0..30524u32 {
        match special.iter().find(|(i, _)| *i == id) {
            Some((_, t)) => vocab.push_str(t),
            None => vocab.push_str(&format!("w{id}")),
        }
        vocab.push('\n');
    }
    let vocab_path = path.with_extension("vocab.txt");
    std::fs::write(&vocab_path, vocab).map_err(|e| e.to_string())?;
    let wp = WordPiece::from_file(&vocab_path.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&vocab_path);
    let mut tok = tokenizers::Tokenizer::new(wp);
    tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::bert::BertPreTokenizer));
    tok.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    let specials: Vec<tokenizers::AddedToken> =
        special.iter().map(|(_, t)| tokenizers::AddedToken::from(t.to_string(), true)).collect();
    tok.add_special_tokens(specials).map_err(|e| e.to_string())?;
    tok.save(path, false).map_err(|e| e.to_string())
}

/// The config of [`tiny_text_encoder`]'s BERT (32-d, one layer, BLIP's 30524-id vocabulary).
pub const TINY_BERT_CONFIG: &str = r#"{"vocab_size": 30524, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "hidden_act": "gelu", "max_position_embeddings": 300, "type_vocab_size": 2,
    "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.0, "initializer_range": 0.02, "pad_token_id": 0}"#;

/// A tiny random sentence encoder (`tiny-bert`, 32-d): writes config.json, tokenizer.json
/// ([`write_tiny_tokenizer`]) and model.safetensors under `dir` and loads them on the CPU.
pub fn tiny_text_encoder(dir: &Path) -> Result<crate::denoise::TextEncoder, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("config.json"), TINY_BERT_CONFIG).map_err(|e| e.to_string())?;
    write_tiny_tokenizer(&dir.join("tokenizer.json"))?;
    let up: candle_transformers::models::bert::Config =
        serde_json::from_str(TINY_BERT_CONFIG).map_err(|e| e.to_string())?;
    let tensors = random_bert_tensors(&up, 5).map_err(|e| e.to_string())?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).map_err(|e| e.to_string())?;
    crate::denoise::TextEncoder::load(dir, "tiny-bert", 64, 8, &Device::Cpu).map_err(|e| e.to_string())
}
