//! VBPR in MMRec's form: users have a 2d-dimensional embedding; an item is
//! `concat(id embedding [d], Linear(concat of its modality features) -> d)`; score = dot product;
//! loss = BPR + reg * (||u||_F + ||i+||_F + ||i-||_F) / B on the batch rows (not squared).
//!
//! The raw features are fixed inputs (only the projection is trained), as in MMRec.

mod fused;

use super::model::{bpr_loss, emb_reg, var_on, xavier_uniform, Batch, LossGrads, Recommender};
use super::npy::Modality;
use super::{LearnError, OpPath, Result};
use candle_core::{DType, Device, Tensor, Var, WithDType};
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

/// VBPR hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VbprParams {
    /// Item id and projected-feature dimension d (users get 2d).
    pub dim: usize,
    /// Weight of the embedding norm regulariser (MMRec `reg_weight`).
    pub reg: f64,
}

impl Default for VbprParams {
    fn default() -> Self {
        Self { dim: 64, reg: 1e-4 }
    }
}

impl VbprParams {
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(LearnError::Invalid("vbpr dim must be > 0".into()));
        }
        if !(self.reg >= 0.0 && self.reg.is_finite()) {
            return Err(LearnError::Invalid(format!("vbpr reg must be >= 0, got {}", self.reg)));
        }
        Ok(())
    }
}

/// A trainable linear layer `y = x W^T + b` (W: [out, in], as in PyTorch).
#[derive(Clone)]
pub struct Linear {
    pub weight: Var,
    pub bias: Var,
}

impl Linear {
    /// PyTorch's default `nn.Linear` init: W and b uniform in +-1/sqrt(in).
    pub fn torch_default(inp: usize, out: usize, dtype: DType, rng: &mut StdRng) -> Result<Self> {
        use rand::Rng;
        let bound = 1.0 / (inp.max(1) as f32).sqrt();
        let w: Vec<f32> = (0..out * inp).map(|_| rng.random_range(-bound..bound)).collect();
        let b: Vec<f32> = (0..out).map(|_| rng.random_range(-bound..bound)).collect();
        Self::from_values(w, b, inp, out, dtype)
    }

    /// MMRec's `xavier_normal_initialization`: W ~ N(0, 2 / (in + out)), b = 0.
    pub fn xavier_normal(inp: usize, out: usize, dtype: DType, rng: &mut StdRng) -> Result<Self> {
        let std = (2.0 / (inp + out) as f64).sqrt() as f32;
        let normal = Normal::new(0.0f32, std).map_err(|e| LearnError::Invalid(format!("xavier normal: {e}")))?;
        let w: Vec<f32> = (0..out * inp).map(|_| normal.sample(rng)).collect();
        Self::from_values(w, vec![0.0; out], inp, out, dtype)
    }

    fn from_values(w: Vec<f32>, b: Vec<f32>, inp: usize, out: usize, dtype: DType) -> Result<Self> {
        let weight = Var::from_tensor(&Tensor::from_vec(w, (out, inp), &Device::Cpu)?.to_dtype(dtype)?)?;
        let bias = Var::from_tensor(&Tensor::from_vec(b, out, &Device::Cpu)?.to_dtype(dtype)?)?;
        Ok(Self { weight, bias })
    }

    /// A copy on `device`.
    pub fn on(&self, device: &Device) -> Result<Self> {
        Ok(Self { weight: var_on(&self.weight, device)?, bias: var_on(&self.bias, device)? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.as_tensor().t()?)?.broadcast_add(self.bias.as_tensor())?)
    }

    /// The layer applied to the rows `items` of `table` (`[n, in]`), outside autograd: the
    /// fused losses' projections.
    pub(crate) fn project_rows<T: WithDType>(&self, table: &Tensor, items: &[u32]) -> Result<ProjectedRows<T>> {
        let idx = Tensor::from_slice(items, items.len(), table.device())?;
        let input = table.detach().index_select(&idx, 0)?;
        let out =
            input.matmul(&self.weight.as_detached_tensor().t()?)?.broadcast_add(&self.bias.as_detached_tensor())?;
        Ok(ProjectedRows { rows: out.flatten_all()?.to_vec1()?, input, items: items.to_vec() })
    }
}

/// A [`Linear`] applied to selected rows of a table (see [`Linear::project_rows`]).
pub(crate) struct ProjectedRows<T> {
    /// The layer's output, `[rows, out]`, row-major.
    pub(crate) rows: Vec<T>,
    /// The input rows, `[rows, in]`.
    input: Tensor,
    /// The table rows they came from.
    items: Vec<u32>,
}

impl<T: WithDType> ProjectedRows<T> {
    /// `g`, the loss gradient at the output rows (row-major), as a `[rows, out]` tensor.
    pub(crate) fn output_grad(&self, g: Vec<T>) -> Result<Tensor> {
        let n = self.items.len();
        let out = g.len().checked_div(n).unwrap_or(0);
        Ok(Tensor::from_vec(g, (n, out), self.input.device())?)
    }

    /// The layer weight's gradient `g^T X` (`g` from [`Self::output_grad`]).
    pub(crate) fn weight_grad(&self, g: &Tensor) -> Result<Tensor> {
        Ok(g.t()?.matmul(&self.input)?)
    }

    /// The `[n, in]` table's gradient: `g W` at the projected rows, zero elsewhere.
    pub(crate) fn table_grad(&self, g: &Tensor, layer: &Linear, n: usize) -> Result<Tensor> {
        let (_, inp) = self.input.dims2()?;
        let rows: Vec<T> = g.matmul(&layer.weight.as_detached_tensor())?.flatten_all()?.to_vec1()?;
        let mut full = vec![T::from_f64(0.0); n * inp];
        for (j, &i) in self.items.iter().enumerate() {
            let i = i as usize;
            if i >= n {
                return Err(LearnError::Invalid(format!("projected row {i} outside a table of {n} rows")));
            }
            full[i * inp..(i + 1) * inp].copy_from_slice(&rows[j * inp..(j + 1) * inp]);
        }
        Ok(Tensor::from_vec(full, (n, inp), self.input.device())?)
    }
}

/// A trainable [rows, cols] table initialised xavier-uniform (as `nn.init.xavier_uniform_`).
pub(crate) fn xavier_var(rows: usize, cols: usize, dtype: DType, rng: &mut StdRng) -> Result<Var> {
    let t = Tensor::from_vec(xavier_uniform(rows, cols, rng), (rows, cols), &Device::Cpu)?.to_dtype(dtype)?;
    Ok(Var::from_tensor(&t)?)
}

/// Checks that every modality covers exactly `n_items` items.
pub(crate) fn check_modalities(n_items: usize, modalities: &[Modality]) -> Result<()> {
    if modalities.is_empty() {
        return Err(LearnError::Invalid("a multimodal model needs at least one feature modality".into()));
    }
    for m in modalities {
        if m.n_items != n_items || m.data.len() != m.n_items * m.dim {
            return Err(LearnError::Invalid(format!(
                "modality {} has {} rows, the interactions have {n_items} items",
                m.name, m.n_items
            )));
        }
    }
    Ok(())
}

pub struct Vbpr {
    user: Var,
    item: Var,
    proj: Linear,
    /// Concatenated raw features [I, sum of modality dims] (fixed input).
    feats: Tensor,
    reg: f64,
    path: OpPath,
}

impl Vbpr {
    /// Builds VBPR over the concatenation of `modalities` (each [n_items, d_m], row i = item i).
    pub fn new(
        n_users: usize,
        n_items: usize,
        modalities: &[Modality],
        params: &VbprParams,
        dtype: DType,
        rng: &mut StdRng,
    ) -> Result<Self> {
        params.validate()?;
        check_modalities(n_items, modalities)?;
        let f: usize = modalities.iter().map(|m| m.dim).sum();
        let mut cat = Vec::with_capacity(n_items * f);
        for i in 0..n_items {
            for m in modalities {
                cat.extend_from_slice(&m.data[i * m.dim..(i + 1) * m.dim]);
            }
        }
        let feats = Tensor::from_vec(cat, (n_items, f), &Device::Cpu)?.to_dtype(dtype)?;
        let d = params.dim;
        let user = xavier_var(n_users, 2 * d, dtype, rng)?;
        let item = xavier_var(n_items, d, dtype, rng)?;
        let proj = Linear::xavier_normal(f, d, dtype, rng)?;
        Ok(Self { user, item, proj, feats, reg: params.reg, path: OpPath::Fused })
    }

    /// Item embeddings of the given item ids (or of all items), the projection adding `bias`.
    fn items_with(&self, idx: Option<&Tensor>, bias: &Tensor) -> Result<Tensor> {
        let (id, raw) = match idx {
            Some(ix) => (self.item.as_tensor().index_select(ix, 0)?, self.feats.index_select(ix, 0)?),
            None => (self.item.as_tensor().clone(), self.feats.clone()),
        };
        let p = raw.matmul(&self.proj.weight.as_tensor().t()?)?.broadcast_add(bias)?;
        Ok(Tensor::cat(&[&id, &p], 1)?)
    }

    fn items(&self, idx: Option<&Tensor>) -> Result<Tensor> {
        self.items_with(idx, self.proj.bias.as_tensor())
    }
}

impl Recommender for Vbpr {
    fn name(&self) -> &'static str {
        "vbpr"
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        vec![
            ("user".into(), self.user.clone()),
            ("item".into(), self.item.clone()),
            ("proj.weight".into(), self.proj.weight.clone()),
            ("proj.bias".into(), self.proj.bias.clone()),
        ]
    }

    fn batch_loss(&self, batch: &Batch) -> Result<Tensor> {
        let u = self.user.as_tensor().index_select(&batch.users, 0)?;
        // the bias cancels in the BPR difference: its BPR gradient is exactly zero, left out of
        // autograd (only the EmbLoss term reaches it), as in the fused kernel
        let fixed = self.proj.bias.as_detached_tensor();
        let rows = |ids: &Tensor, bias: &Tensor| self.items_with(Some(ids), bias);
        let loss = bpr_loss(&u, &rows(&batch.pos, &fixed)?, &rows(&batch.neg, &fixed)?)?;
        if self.reg == 0.0 {
            return Ok(loss);
        }
        let bias = self.proj.bias.as_tensor();
        let (p, n) = (rows(&batch.pos, bias)?, rows(&batch.neg, bias)?);
        Ok(loss.add(&emb_reg(&[&u, &p, &n])?.affine(self.reg, 0.0)?)?)
    }

    /// The fused kernel (`vbpr/fused.rs`) on the CPU's fused path, autograd on [`Self::batch_loss`]
    /// otherwise.
    fn loss_and_grads(&self, batch: &Batch) -> Result<LossGrads> {
        if !self.path.fused_on(self.user.device()) {
            return Ok(LossGrads::autograd(self.batch_loss(batch)?));
        }
        match self.user.dtype() {
            DType::F32 => self.fused_loss::<f32>(batch),
            DType::F64 => self.fused_loss::<f64>(batch),
            dt => Err(LearnError::Invalid(format!("VBPR parameters must be f32 or f64, not {dt:?}"))),
        }
    }

    fn embeddings(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.user.as_tensor().clone(), self.items(None)?))
    }

    fn place(&mut self, device: &Device, path: OpPath) -> Result<()> {
        self.path = path;
        self.user = var_on(&self.user, device)?;
        self.item = var_on(&self.item, device)?;
        self.proj = self.proj.on(device)?;
        self.feats = self.feats.to_device(device)?;
        Ok(())
    }
}
