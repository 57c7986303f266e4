//! BERT building blocks over [`Weights`] (HF tensor names) for BLIP's text decoder
//! ([`super::blip::CachedDecoder`]), and the `config.json` fields of a BERT checkpoint (also read by
//! the MiniLM sentence encoder, [`super::packed_bert`]).
//!
//! Same computation as candle's `bert` / `blip_text` modules, with the exact GELU through the
//! vectorised kernel of [`crate::kernels::gelu`] (candle's scalar `erf` was an eighth of a BERT
//! encoder's time).
use super::weights::{Lin, Weights};
use crate::kernels::gelu::activate;
use candle_core::{Module, Result, Tensor, D};
use candle_nn::LayerNorm;

/// Multi-head attention with its output block (`self.{query,key,value}`, `output.dense`,
/// `output.LayerNorm`): LayerNorm(dense(attention) + input).
pub struct Attention {
    query: Lin,
    key: Lin,
    value: Lin,
    /// Query, key and value weights stacked into one product, for self-attention over dense weights.
    qkv: Option<candle_nn::Linear>,
    out_dense: Lin,
    out_ln: LayerNorm,
    heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    /// `kv_in`: width of what the keys and values are computed from (the encoder's, for cross-attention).
    pub fn new(hidden: usize, kv_in: usize, heads: usize, eps: f64, w: &Weights) -> Result<Self> {
        let s = w.pp("self");
        let head_dim = hidden / heads;
        Ok(Self {
            query: s.pp("query").linear(hidden, hidden)?,
            key: s.pp("key").linear(kv_in, hidden)?,
            value: s.pp("value").linear(kv_in, hidden)?,
            qkv: None,
            out_dense: w.pp("output").pp("dense").linear(hidden, hidden)?,
            out_ln: w.pp("output").pp("LayerNorm").layer_norm(hidden, eps)?,
            heads,
            head_dim,
            scale: 1f64 / (head_dim as f64).sqrt(),
        })
    }

    /// Self-attention with one (3h x h) product for the queries, keys and values instead of three
    /// (dense weights only: quantized matrices stay separate).
    pub fn new_self(hidden: usize, heads: usize, eps: f64, w: &Weights) -> Result<Self> {
        let mut a = Self::new(hidden, hidden, heads, eps, w)?;
        if let (Lin::Dense(q), Lin::Dense(k), Lin::Dense(v)) = (&a.query, &a.key, &a.value) {
            let weight = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
            let bias = match (q.bias(), k.bias(), v.bias()) {
                (Some(qb), Some(kb), Some(vb)) => Some(Tensor::cat(&[qb, kb, vb], 0)?),
                _ => None,
            };
            a.qkv = Some(candle_nn::Linear::new(weight, bias));
        }
        Ok(a)
    }

    /// Self-attention of `xs` (queries, keys and values all from `xs`), plus the output block.
    pub fn self_attend(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let Some(qkv) = &self.qkv else {
            let (k, v) = self.kv(xs)?;
            return self.attend(xs, &k, &v, mask);
        };
        let (b, seq, _) = xs.dims3()?;
        // (b, seq, 3, heads, hd) -> (3, b, heads, seq, hd)
        let qkv = xs.apply(qkv)?.reshape((b, seq, 3, self.heads, self.head_dim))?.permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * self.scale)?.contiguous()?;
        let (k, v) = (qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
        self.finish(xs, &q, &k, &v, mask)
    }

    /// (b, seq, h) -> (b, heads, seq, head_dim), contiguous.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, seq, _) = xs.dims3()?;
        xs.reshape((b, seq, self.heads, self.head_dim))?.permute((0, 2, 1, 3))?.contiguous()
    }

    /// Keys and values of `xs`, split into heads.
    pub fn kv(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.split_heads(&self.key.forward(xs)?)?, self.split_heads(&self.value.forward(xs)?)?))
    }

    /// Attention of `xs` over `k`/`v`, plus the output block. `mask` is added to the scores
    /// (broadcast to (b, heads, seq, kv_len)).
    pub fn attend(&self, xs: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let q = self.split_heads(&(self.query.forward(xs)? * self.scale)?)?;
        self.finish(xs, &q, k, v, mask)
    }

    /// Scores, softmax, context and the output block, from scaled queries split into heads.
    fn finish(&self, xs: &Tensor, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(v)?.permute((0, 2, 1, 3))?.flatten_from(D::Minus2)?;
        (ctx.apply(&self.out_dense)? + xs)?.apply(&self.out_ln)
    }
}

/// The feed-forward block (`intermediate.dense`, `output.dense`, `output.LayerNorm`):
/// LayerNorm(dense(act(dense(x))) + x).
pub struct FeedForward {
    inter: Lin,
    act: candle_nn::Activation,
    out_dense: Lin,
    out_ln: LayerNorm,
}

impl FeedForward {
    pub fn new(hidden: usize, inter: usize, act: candle_nn::Activation, eps: f64, w: &Weights) -> Result<Self> {
        Ok(Self {
            inter: w.pp("intermediate").pp("dense").linear(hidden, inter)?,
            act,
            out_dense: w.pp("output").pp("dense").linear(inter, hidden)?,
            out_ln: w.pp("output").pp("LayerNorm").layer_norm(hidden, eps)?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = activate(self.act, &xs.apply(&self.inter)?)?;
        (h.apply(&self.out_dense)? + xs)?.apply(&self.out_ln)
    }
}

/// The fields of a BERT `config.json` that the encoder needs.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: candle_nn::Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
}
