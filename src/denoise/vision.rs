//! BLIP's ViT image encoder (`vision_model.*` tensors) over dense or quantized weights.
//!
//! Same computation as candle's `blip` / `quantized_blip` vision models, arranged for inference
//! speed on a small CPU: the exact GELU runs through the vectorised kernel of
//! [`crate::kernels::gelu`], the attention on the CPU runs one (image, head) pair per task straight
//! from the query-key-value product, with a vectorised softmax and one n × n score buffer per task
//! (`CpuAttention`, over [`crate::kernels::attention`]); elsewhere it runs one image at a time with
//! the scale folded into the queries.
use super::weights::{Lin, Weights};
use crate::kernels::attention::attention_f32;
use crate::kernels::contiguous_f32;
use crate::kernels::gelu::activate;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm};
use candle_transformers::models::blip::VisionConfig;

struct Layer {
    ln1: LayerNorm,
    qkv: Lin,
    projection: Lin,
    ln2: LayerNorm,
    fc1: Lin,
    fc2: Lin,
}

/// The vision encoder: pixels (b, 3, s, s) to tokens (b, 1 + patches, hidden), CLS first.
pub struct VisionEncoder {
    patch: Conv2d,
    class: Tensor,
    positions: Tensor,
    layers: Vec<Layer>,
    post_ln: LayerNorm,
    act: candle_nn::Activation,
    heads: usize,
    scale: f64,
}

impl VisionEncoder {
    /// Loads from the weights at prefix `vision_model`.
    pub fn new(cfg: &VisionConfig, w: &Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        let emb = w.pp("embeddings");
        let pe = emb.pp("patch_embedding");
        let patch = Conv2d::new(
            pe.tensor((h, 3, cfg.patch_size, cfg.patch_size), "weight")?,
            Some(pe.tensor(h, "bias")?),
            Conv2dConfig { stride: cfg.patch_size, ..Default::default() },
        );
        let side = cfg.image_size / cfg.patch_size;
        let enc = w.pp("encoder").pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = enc.pp(i);
                let a = l.pp("self_attn");
                Ok(Layer {
                    ln1: l.pp("layer_norm1").layer_norm(h, cfg.layer_norm_eps)?,
                    qkv: a.pp("qkv").linear(h, 3 * h)?,
                    projection: a.pp("projection").linear(h, h)?,
                    ln2: l.pp("layer_norm2").layer_norm(h, cfg.layer_norm_eps)?,
                    fc1: l.pp("mlp").pp("fc1").linear(h, cfg.intermediate_size)?,
                    fc2: l.pp("mlp").pp("fc2").linear(cfg.intermediate_size, h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch,
            class: emb.tensor((1, 1, h), "class_embedding")?,
            positions: emb.tensor((1, side * side + 1, h), "position_embedding")?,
            layers,
            post_ln: w.pp("post_layernorm").layer_norm(h, cfg.layer_norm_eps)?,
            act: cfg.hidden_act,
            heads: cfg.num_attention_heads,
            scale: 1.0 / ((h / cfg.num_attention_heads) as f64).sqrt(),
        })
    }

    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let patches = pixels.apply(&self.patch)?.flatten_from(2)?.t()?;
        let h = self.class.dim(D::Minus1)?;
        let class = self.class.broadcast_as((b, 1, h))?.to_dtype(patches.dtype())?;
        let x = Tensor::cat(&[&class, &patches], 1)?;
        let mut x = x.broadcast_add(&self.positions.narrow(1, 0, x.dim(1)?)?.to_dtype(x.dtype())?)?;
        for l in &self.layers {
            let a = self.attention(l, &x.apply(&l.ln1)?)?;
            x = (a + &x)?;
            let m = activate(self.act, &x.apply(&l.ln2)?.apply(&l.fc1)?)?.apply(&l.fc2)?;
            x = (m + &x)?;
        }
        x.apply(&self.post_ln)
    }

    /// Multi-head self-attention with its output projection.
    fn attention(&self, l: &Layer, xs: &Tensor) -> Result<Tensor> {
        let qkv = xs.apply(&l.qkv)?;
        let ctx = if qkv.device().is_cpu() && qkv.dtype() == DType::F32 {
            qkv.contiguous()?.apply_op1_no_bwd(&CpuAttention { heads: self.heads, scale: self.scale as f32 })?
        } else {
            attention_tensor_ops(&qkv, self.heads, self.scale)?
        };
        ctx.apply(&l.projection)
    }
}

/// Attention through candle's tensor operations (the GPU path, f16 there), one image at a time:
/// the (b, n, 3h) query-key-value product to the (b, n, h) contexts, as [`CpuAttention`].
fn attention_tensor_ops(qkv: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (b, n, h3) = qkv.dims3()?;
    if h3 % (3 * heads) != 0 {
        candle_core::bail!("attention: width {h3} is not 3 x {heads} heads")
    }
    let hd = h3 / 3 / heads;
    // (b, n, 3, heads, hd) -> (3, b, heads, n, hd)
    let qkv = qkv.reshape((b, n, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?;
    let ctx = (0..b)
        .map(|i| {
            let q = (qkv.get(0)?.get(i)? * scale)?.contiguous()?;
            let k = qkv.get(1)?.get(i)?.contiguous()?;
            let v = qkv.get(2)?.get(i)?.contiguous()?;
            let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
            probs.matmul(&v)?.transpose(0, 1)?.flatten_from(1)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::stack(&ctx, 0)
}

/// Attention on the CPU from the (b, n, 3h) query-key-value product to the (b, n, h) contexts:
/// [`crate::kernels::attention::attention_f32`], one (image, head) pair per task.
struct CpuAttention {
    heads: usize,
    scale: f32,
}

impl CustomOp1 for CpuAttention {
    fn name(&self) -> &'static str {
        "cpu-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(self.name(), storage, layout)?;
        let (b, n, h3) = layout.shape().dims3()?;
        if h3 % (3 * self.heads) != 0 {
            candle_core::bail!("cpu-attention: width {h3} is not 3 x {} heads", self.heads)
        }
        let ctx = attention_f32(src, b, n, h3, self.heads, self.scale);
        Ok((CpuStorage::F32(ctx), Shape::from((b, n, h3 / 3))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The tensor-op attention (what runs on the GPU) against the CPU kernel, 1e-5 apart in f32.
    #[test]
    fn tensor_op_attention_matches_the_cpu_kernel() {
        let (heads, hd) = (4usize, 8usize);
        let scale = 1.0 / (hd as f64).sqrt();
        let qkv = Tensor::randn(0f32, 1.0, (2, 7, 3 * heads * hd), &Device::Cpu).unwrap();
        let cpu = qkv.apply_op1_no_bwd(&CpuAttention { heads, scale: scale as f32 }).unwrap();
        let ops = attention_tensor_ops(&qkv, heads, scale).unwrap();
        assert_eq!(cpu.dims(), &[2, 7, heads * hd]);
        assert_eq!(cpu.dims(), ops.dims());
        let diff = (cpu - ops).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "attention paths differ by {diff}");
        assert!(attention_tensor_ops(&qkv.narrow(2, 0, 10).unwrap(), heads, scale).is_err(), "bad width refused");
    }
}
