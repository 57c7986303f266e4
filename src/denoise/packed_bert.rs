//! A BERT encoder for sentence embeddings over packed sentences: the tokens of a batch are laid
//! end to end (no padding), the linear layers run once over all of them, and attention runs within
//! each sentence. Linear layers are f32 (the `gemm` crate, candle's own CPU kernel) or int8
//! ([`crate::kernels::qgemm`], AVX-512 VNNI where present).
//!
//! The f32 computation is candle's `BertModel` on the same weights (padding tokens get zero
//! attention there, so leaving them out changes no real token's value); a test holds it to 1e-5.
use super::bert::BertConfig;
use super::weights::Weights;
use crate::kernels::gelu::gelu_in_place;
use crate::kernels::matmul::{matmul_f32, MatRef, Parallel};
use crate::kernels::qgemm::QLinear;
use crate::kernels::softmax::softmax_in_place;
use candle_core::Result;
use rayon::prelude::*;

/// Numeric format of the encoder's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The checkpoint's f32 weights: the reference numbers (sentence-transformers' to 4 decimals).
    F32,
    /// Int8 weights (per output feature) and activations (per token, asymmetric), a few outlier
    /// input features in f32; about 3x faster than f32 on CPUs with AVX-512 VNNI, embeddings at
    /// cosine 0.9997 to f32's on average (see docs/denoise.md).
    Int8,
}

/// A sentence's first row in the packed tokens and its length.
type Span = (usize, usize);

/// A linear layer, y = x·Wᵀ + b.
enum Linear {
    F32 { w: Vec<f32>, b: Vec<f32>, n: usize, k: usize },
    Int8(QLinear),
}

impl Linear {
    fn load(w: &Weights, n: usize, k: usize) -> Result<Self> {
        let weight = w.tensor((n, k), "weight")?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Linear::F32 { w: weight, b: w.tensor(n, "bias")?.to_vec1::<f32>()?, n, k })
    }

    /// The int8 form of an f32 layer, calibrated with the largest |input| per feature seen in
    /// calibration (outlier inputs in f32, the others smoothed: [`QLinear::quantize_smoothed`];
    /// plain per-feature quantization without them).
    fn to_int8(&self, act_max: Option<&[f32]>) -> Self {
        match (self, act_max) {
            (Linear::F32 { w, b, n, k }, Some(a)) => Linear::Int8(QLinear::quantize_smoothed(w, Some(b), *n, *k, a)),
            (Linear::F32 { w, b, n, k }, None) => Linear::Int8(QLinear::quantize(w, Some(b), *n, *k)),
            (Linear::Int8(q), _) => Linear::Int8(q.clone()),
        }
    }

    fn out_features(&self) -> usize {
        match self {
            Linear::F32 { n, .. } => *n,
            Linear::Int8(q) => q.out_features(),
        }
    }

    /// (m × n) = x (m × k)·Wᵀ + b (+ residual).
    fn forward(&self, x: &[f32], m: usize, residual: Option<&[f32]>) -> Vec<f32> {
        match self {
            Linear::F32 { w, b, n, k } => {
                let (n, k) = (*n, *k);
                let mut out: Vec<f32> = match residual {
                    Some(r) => r.chunks_exact(n).flat_map(|row| row.iter().zip(b).map(|(r, b)| r + b)).collect(),
                    None => b.iter().copied().cycle().take(m * n).collect(),
                };
                assert!(x.len() >= m * k && out.len() == m * n);
                // out += x (m × k) · Wᵀ (Wᵀ read from the row-major n × k weight).
                matmul_f32(
                    m,
                    n,
                    k,
                    &mut out,
                    true,
                    MatRef::row_major(x, k),
                    MatRef::transposed(w, k),
                    1.0,
                    Parallel::Rayon,
                );
                out
            }
            Linear::Int8(q) => {
                let mut out = vec![0f32; m * q.out_features()];
                q.forward(x, m, &mut out, residual);
                out
            }
        }
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(w: &Weights, h: usize, eps: f64) -> Result<Self> {
        Ok(Self { gamma: w.tensor(h, "weight")?.to_vec1()?, beta: w.tensor(h, "bias")?.to_vec1()?, eps: eps as f32 })
    }

    /// LayerNorm of every row of `x` (width h), in place.
    fn apply(&self, x: &mut [f32]) {
        let h = self.gamma.len();
        x.par_chunks_mut(h * 16).for_each(|rows| {
            for row in rows.chunks_exact_mut(h) {
                let mean = row.iter().sum::<f32>() / h as f32;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
                let inv = 1.0 / (var + self.eps).sqrt();
                for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                    *v = (*v - mean) * inv * g + b;
                }
            }
        });
    }
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    ln1: Norm,
    inter: Linear,
    out: Linear,
    ln2: Norm,
}

/// The encoder (`embeddings.*`, `encoder.layer.N.*` tensors of a BERT checkpoint).
pub struct PackedBert {
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token type 0 (sentence embeddings use no other).
    token_type: Vec<f32>,
    emb_ln: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_positions: usize,
    precision: Precision,
}

impl PackedBert {
    /// Loads the encoder. For int8, `calibration` (word-piece ids of typical inputs) first runs in
    /// f32 to find each linear layer's largest input per feature, which picks the outlier inputs
    /// and sets the smoothing of [`QLinear::quantize_smoothed`]; with no calibration input the
    /// layers are quantized plainly.
    pub fn new(cfg: &BertConfig, w: &Weights, precision: Precision, calibration: &[Vec<u32>]) -> Result<Self> {
        if cfg.hidden_act != candle_nn::Activation::Gelu {
            candle_core::bail!("packed BERT: activation {:?} is not supported (exact GELU only)", cfg.hidden_act)
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            candle_core::bail!("hidden size {} is not a multiple of {} heads", cfg.hidden_size, cfg.num_attention_heads)
        }
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let emb = w.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = w.pp("encoder").pp("layer").pp(i);
                let a = l.pp("attention");
                let s = a.pp("self");
                // Queries, keys and values in one (3h × h) product; the attention scale is folded
                // into the query rows (exact for the 1/8 of 64-wide heads, one rounding otherwise).
                let scale = 1.0 / ((h / cfg.num_attention_heads) as f32).sqrt();
                let mut wqkv = Vec::with_capacity(3 * h * h);
                let mut bqkv = Vec::with_capacity(3 * h);
                for (name, sc) in [("query", scale), ("key", 1.0), ("value", 1.0)] {
                    let p = s.pp(name);
                    wqkv.extend(
                        p.tensor((h, h), "weight")?.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| v * sc),
                    );
                    bqkv.extend(p.tensor(h, "bias")?.to_vec1::<f32>()?.into_iter().map(|v| v * sc));
                }
                Ok(Layer {
                    qkv: Linear::F32 { w: wqkv, b: bqkv, n: 3 * h, k: h },
                    attn_out: Linear::load(&a.pp("output").pp("dense"), h, h)?,
                    ln1: Norm::load(&a.pp("output").pp("LayerNorm"), h, eps)?,
                    inter: Linear::load(&l.pp("intermediate").pp("dense"), cfg.intermediate_size, h)?,
                    out: Linear::load(&l.pp("output").pp("dense"), h, cfg.intermediate_size)?,
                    ln2: Norm::load(&l.pp("output").pp("LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let flat = |t: candle_core::Tensor| t.flatten_all()?.to_vec1::<f32>();
        Ok(Self {
            word: flat(emb.pp("word_embeddings").tensor((cfg.vocab_size, h), "weight")?)?,
            position: flat(emb.pp("position_embeddings").tensor((cfg.max_position_embeddings, h), "weight")?)?,
            token_type: emb
                .pp("token_type_embeddings")
                .tensor((cfg.type_vocab_size, h), "weight")?
                .get(0)?
                .to_vec1()?,
            emb_ln: Norm::load(&emb.pp("LayerNorm"), h, eps)?,
            layers,
            hidden: h,
            heads: cfg.num_attention_heads,
            vocab: cfg.vocab_size,
            max_positions: cfg.max_position_embeddings,
            precision: Precision::F32,
        })
        .and_then(|m| match precision {
            Precision::F32 => Ok(m),
            Precision::Int8 => m.quantized(calibration),
        })
    }

    /// This f32 encoder with int8 linear layers (see [`PackedBert::new`]).
    fn quantized(mut self, calibration: &[Vec<u32>]) -> Result<Self> {
        let stats = if calibration.is_empty() {
            None
        } else {
            let mut stats = Vec::new();
            self.encode(calibration, Some(&mut stats))?;
            Some(stats)
        };
        for (i, l) in self.layers.iter_mut().enumerate() {
            let st = stats.as_ref().map(|s: &Vec<[Vec<f32>; 4]>| &s[i]);
            let pick = |j: usize| st.map(|s| s[j].as_slice());
            l.qkv = l.qkv.to_int8(pick(0));
            l.attn_out = l.attn_out.to_int8(pick(1));
            l.inter = l.inter.to_int8(pick(2));
            l.out = l.out.to_int8(pick(3));
        }
        let outliers: usize = self
            .layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.attn_out, &l.inter, &l.out])
            .map(|l| match l {
                Linear::Int8(q) => q.outlier_inputs().len(),
                Linear::F32 { .. } => 0,
            })
            .sum();
        tracing::debug!(outliers, "int8 sentence encoder: outlier input features computed in f32");
        self.precision = Precision::Int8;
        Ok(self)
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Mean-pooled, L2-normalised embeddings of `sentences` (word-piece ids, `[CLS]`/`[SEP]` included).
    pub fn embed(&self, sentences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden;
        let (x, spans) = self.encode(sentences, None)?;
        Ok(spans
            .iter()
            .map(|&(start, len)| {
                let mut mean = vec![0f32; h];
                for row in x[start * h..(start + len) * h].chunks_exact(h) {
                    mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
                }
                let n = len.max(1) as f32;
                mean.iter_mut().for_each(|m| *m /= n);
                let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                mean.iter_mut().for_each(|m| *m /= norm);
                mean
            })
            .collect())
    }

    /// The last hidden states of the packed tokens (total × hidden) and each sentence's (first
    /// row, length). With `stats`, also records every layer's largest |input| per feature of its
    /// four linear layers (query-key-value, attention output, intermediate, output).
    fn encode(
        &self,
        sentences: &[Vec<u32>],
        mut stats: Option<&mut Vec<[Vec<f32>; 4]>>,
    ) -> Result<(Vec<f32>, Vec<Span>)> {
        let h = self.hidden;
        let mut spans = Vec::with_capacity(sentences.len());
        let mut total = 0;
        for s in sentences {
            if s.len() > self.max_positions {
                candle_core::bail!("input of {} tokens is longer than {} positions", s.len(), self.max_positions)
            }
            if let Some(&bad) = s.iter().find(|&&id| id as usize >= self.vocab) {
                candle_core::bail!("token id {bad} is outside the vocabulary of {}", self.vocab)
            }
            spans.push((total, s.len()));
            total += s.len();
        }
        let mut x = vec![0f32; total * h];
        for (s, &(start, len)) in sentences.iter().zip(&spans) {
            for (p, &id) in s.iter().enumerate().take(len) {
                let row = &mut x[(start + p) * h..(start + p + 1) * h];
                let (w, pos) = (&self.word[id as usize * h..][..h], &self.position[p * h..][..h]);
                for i in 0..h {
                    row[i] = w[i] + pos[i] + self.token_type[i];
                }
            }
        }
        self.emb_ln.apply(&mut x);
        for (i, l) in self.layers.iter().enumerate() {
            let mut record = |j: usize, input: &[f32]| {
                if let Some(st) = stats.as_deref_mut() {
                    if st.len() <= i {
                        st.push(Default::default());
                    }
                    record_max(&mut st[i][j], input, total);
                }
            };
            record(0, &x);
            let qkv = l.qkv.forward(&x, total, None);
            let ctx = self.attention(&qkv, &spans, total);
            record(1, &ctx);
            let mut a = l.attn_out.forward(&ctx, total, Some(&x));
            l.ln1.apply(&mut a);
            record(2, &a);
            let mut inter = l.inter.forward(&a, total, None);
            let width = l.inter.out_features();
            inter.par_chunks_mut(width * 8).for_each(gelu_in_place);
            record(3, &inter);
            x = l.out.forward(&inter, total, Some(&a));
            l.ln2.apply(&mut x);
        }
        Ok((x, spans))
    }

    /// Self-attention within each sentence: (total × h) contexts from (total × 3h) queries (already
    /// scaled), keys and values.
    fn attention(&self, qkv: &[f32], spans: &[(usize, usize)], total: usize) -> Vec<f32> {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let mut ctx = vec![0f32; total * h];
        // Disjoint (sentence, its rows of ctx) pairs for the pool.
        let mut parts = Vec::with_capacity(spans.len());
        let mut rest = ctx.as_mut_slice();
        for &(start, len) in spans {
            let (mine, tail) = rest.split_at_mut(len * h);
            parts.push((start, len, mine));
            rest = tail;
        }
        parts.into_par_iter().for_each(|(start, len, out)| {
            let row = |t: usize| &qkv[(start + t) * 3 * h..(start + t + 1) * 3 * h];
            let mut p = vec![0f32; len];
            for head in 0..heads {
                let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
                for i in 0..len {
                    let q = &row(i)[qo..qo + d];
                    for (j, pj) in p.iter_mut().enumerate() {
                        *pj = dot(q, &row(j)[ko..ko + d]);
                    }
                    softmax_in_place(&mut p, len);
                    let o = &mut out[i * h + qo..i * h + qo + d];
                    for (j, &w) in p.iter().enumerate() {
                        o.iter_mut().zip(&row(j)[vo..vo + d]).for_each(|(o, v)| *o += w * v);
                    }
                }
            }
        });
        ctx
    }
}

/// Dot product with eight independent partial sums, so the compiler vectorises it.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Folds the largest |value| per column of `rows` (row-major, `m` rows) into `max`.
fn record_max(max: &mut Vec<f32>, rows: &[f32], m: usize) {
    if m == 0 {
        return;
    }
    let width = rows.len() / m;
    max.resize(width, 0.0);
    for row in rows.chunks_exact(width) {
        max.iter_mut().zip(row).for_each(|(a, v)| *a = a.max(v.abs()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denoise::embed::cosine;
    use candle_core::{DType, Device, Tensor};

    const CONFIG: &str = r#"{"vocab_size": 120, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "hidden_act": "gelu", "max_position_embeddings": 40, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.0, "initializer_range": 0.02, "pad_token_id": 0}"#;

    /// A random tiny BERT as both candle's `BertModel` and ours (same tensors).
    fn models(
        precision: Precision,
        calibration: &[Vec<u32>],
    ) -> (candle_transformers::models::bert::BertModel, PackedBert) {
        let up_cfg: candle_transformers::models::bert::Config = serde_json::from_str(CONFIG).unwrap();
        let cfg: BertConfig = serde_json::from_str(CONFIG).unwrap();
        let tensors = crate::denoise::testutil::random_bert_tensors(&up_cfg, 7).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let up = candle_transformers::models::bert::BertModel::load(vb.clone(), &up_cfg).unwrap();
        let ours = PackedBert::new(&cfg, &Weights::Dense(vb), precision, calibration).unwrap();
        (up, ours)
    }

    fn sentences(seed: u32) -> Vec<Vec<u32>> {
        // Lengths 1 to 37 (the longest fits the 40 positions), ids spread over the vocabulary.
        [1usize, 2, 5, 9, 17, 37, 3, 12]
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len as u32).map(|t| (t * 37 + i as u32 * 11 + seed * 5) % 120).collect())
            .collect()
    }

    /// candle's embedding of one sentence (no padding): mean of the last hidden states, L2-normalised.
    fn reference(m: &candle_transformers::models::bert::BertModel, ids: &[u32]) -> Vec<f32> {
        let t = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let hidden = m.forward(&t, &t.zeros_like().unwrap(), None).unwrap();
        let mean = hidden.mean(1).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
        mean.iter().map(|v| v / norm).collect()
    }

    #[test]
    fn packed_f32_equals_candles_bert_model_sentence_by_sentence() {
        let (up, ours) = models(Precision::F32, &[]);
        let s = sentences(0);
        let packed = ours.embed(&s).unwrap();
        for (ids, got) in s.iter().zip(&packed) {
            let want = reference(&up, ids);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 2e-6, "{} tokens: max difference {worst}", ids.len());
        }
        // Packing is invisible: each sentence alone gives its packed result.
        for (ids, got) in s.iter().zip(&packed) {
            let alone = ours.embed(std::slice::from_ref(ids)).unwrap().remove(0);
            assert!(alone.iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-6));
        }
    }

    #[test]
    fn int8_with_and_without_calibration_stays_close_to_f32() {
        let (_, f32) = models(Precision::F32, &[]);
        let (_, plain) = models(Precision::Int8, &[]);
        let (_, smooth) = models(Precision::Int8, &sentences(3));
        assert_eq!(smooth.precision(), Precision::Int8);
        let s = sentences(0);
        let (want, a, b) = (f32.embed(&s).unwrap(), plain.embed(&s).unwrap(), smooth.embed(&s).unwrap());
        let worst = |x: &[Vec<f32>]| x.iter().zip(&want).map(|(p, q)| cosine(p, q)).fold(1f32, f32::min);
        let (wa, wb) = (worst(&a), worst(&b));
        assert!(wa > 0.99 && wb > 0.99, "int8 cosine to f32: plain {wa}, smoothed {wb}");
        assert!(a != want && b != a, "int8 layers were not used");
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let (_, ours) = models(Precision::F32, &[]);
        assert!(ours.embed(&[vec![5, 120]]).is_err(), "id outside the vocabulary");
        assert!(ours.embed(&[vec![1; 41]]).is_err(), "longer than the positions");
        assert!(ours.embed(&[]).unwrap().is_empty());
    }
}
