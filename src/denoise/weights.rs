//! One view over BLIP weights in either format: safetensors (f32/f16, `candle_nn::VarBuilder`) or
//! GGUF (Q4K/Q8_0/F32 tensors, `quantized_var_builder::VarBuilder`). Tensor names are HF's.
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm};
use candle_transformers::quantized_nn;
use candle_transformers::quantized_var_builder::VarBuilder as QVarBuilder;

/// Weights of a BLIP checkpoint, at some prefix.
#[derive(Clone)]
pub enum Weights {
    /// safetensors, loaded in `dtype`.
    Dense(candle_nn::VarBuilder<'static>),
    /// GGUF: quantized matrices stay quantized (shared `Arc`s), vectors are dequantized.
    Quant(QVarBuilder),
}

/// A linear layer over dense or quantized weights.
#[derive(Debug, Clone)]
pub enum Lin {
    Dense(candle_nn::Linear),
    Quant(quantized_nn::Linear),
}

impl Module for Lin {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Lin::Dense(l) => l.forward(xs),
            Lin::Quant(l) => l.forward(xs),
        }
    }
}

impl Weights {
    /// Loads a safetensors file fully into memory (tensors then share storage between users).
    pub fn from_safetensors(path: &std::path::Path, dtype: DType, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device)?;
        Ok(Weights::Dense(candle_nn::VarBuilder::from_tensors(tensors, dtype, device)))
    }

    /// Loads a GGUF file.
    pub fn from_gguf(path: &std::path::Path, device: &Device) -> Result<Self> {
        Ok(Weights::Quant(QVarBuilder::from_gguf(path, device)?))
    }

    pub fn pp(&self, s: impl ToString) -> Self {
        match self {
            Weights::Dense(vb) => Weights::Dense(vb.pp(s.to_string())),
            Weights::Quant(vb) => Weights::Quant(vb.pp(s)),
        }
    }

    pub fn device(&self) -> &Device {
        match self {
            Weights::Dense(vb) => vb.device(),
            Weights::Quant(vb) => vb.device(),
        }
    }

    /// Activation dtype: the safetensors dtype, or f32 for GGUF.
    pub fn dtype(&self) -> DType {
        match self {
            Weights::Dense(vb) => vb.dtype(),
            Weights::Quant(_) => DType::F32,
        }
    }

    /// `weight` (out, in) and `bias` (out).
    pub fn linear(&self, in_dim: usize, out_dim: usize) -> Result<Lin> {
        match self {
            Weights::Dense(vb) => Ok(Lin::Dense(candle_nn::linear(in_dim, out_dim, vb.clone())?)),
            Weights::Quant(vb) => Ok(Lin::Quant(quantized_nn::linear(in_dim, out_dim, vb.clone())?)),
        }
    }

    /// BERT's LM head: `decoder.weight` (vocab, hidden) and a separate `bias` (vocab).
    pub fn lm_head(&self, hidden: usize, vocab: usize) -> Result<Lin> {
        match self {
            Weights::Dense(vb) => {
                let w = vb.get((vocab, hidden), "decoder.weight")?;
                let b = vb.get(vocab, "bias")?;
                Ok(Lin::Dense(candle_nn::Linear::new(w, Some(b))))
            }
            Weights::Quant(vb) => {
                let w = vb.pp("decoder").get((vocab, hidden), "weight")?;
                let b = vb.get(vocab, "bias")?.dequantize(vb.device())?;
                Ok(Lin::Quant(quantized_nn::Linear::from_arc(w, Some(b))?))
            }
        }
    }

    pub fn layer_norm(&self, size: usize, eps: f64) -> Result<LayerNorm> {
        match self {
            Weights::Dense(vb) => candle_nn::layer_norm(size, eps, vb.clone()),
            Weights::Quant(vb) => quantized_nn::layer_norm(size, eps, vb.clone()),
        }
    }

    /// A plain tensor (quantized ones are dequantized), in the activation dtype.
    pub fn tensor<S: Into<candle_core::Shape>>(&self, shape: S, name: &str) -> Result<Tensor> {
        match self {
            Weights::Dense(vb) => vb.get(shape, name),
            Weights::Quant(vb) => vb.get(shape, name)?.dequantize(vb.device()),
        }
    }

    pub fn embedding(&self, n: usize, dim: usize) -> Result<Embedding> {
        Ok(Embedding::new(self.tensor((n, dim), "weight")?, dim))
    }
}
