//! FREEDOM (Zhou & Shen, MM 2023) as in MMRec:
//! - a frozen item-item graph S (per-modality cosine kNN, see [`super::knn`]) gives
//!   h = S^L_mm E_item (one layer by default);
//! - the user-item side is LightGCN (mean over layers 0..L, L = 2) on the bipartite graph,
//!   pruned at each epoch start: keep (1 - dropout)|E| edges drawn without replacement with
//!   probability proportional to 1/sqrt(d_u d_i), renormalised D^-1/2 A D^-1/2; the full graph
//!   is used for evaluation;
//! - item = ui_item + h; loss = BPR(u, i+, i-) + lambda * sum_m BPR(u, T_m(i+), T_m(i-)) with
//!   T_m = Linear(feature table m), the feature tables initialised from the raw features and
//!   trained (MMRec `nn.Embedding.from_pretrained(freeze=False)`).
//!
//! Modalities are a list; with two of them MMRec's weights are 0.1 (image) and 0.9 (text or, for
//! TikTok, audio).

mod fused;

use super::knn::{item_graph_with_neighbours, ItemGraphParts, KnnParams};
use super::model::{bpr_loss, var_on, Batch, LossGrads, Recommender};
use super::npy::Modality;
use super::sparse::{normalized_bipartite, SparseOp, Workspace};
use super::vbpr::{check_modalities, xavier_var, Linear};
use super::{LearnError, OpPath, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::Arc;

/// FREEDOM hyper-parameters (MMRec names in brackets).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreedomParams {
    /// Id embedding size (MMRec `embedding_size`).
    pub dim: usize,
    /// User-item LightGCN layers (MMRec `n_ui_layers`).
    pub ui_layers: usize,
    /// Item-item graph layers (MMRec `n_mm_layers`).
    pub mm_layers: usize,
    /// Fraction of user-item edges dropped each epoch (MMRec `dropout`), in [0, 1).
    pub dropout: f64,
    /// Weight of the modality BPR terms (MMRec `reg_weight`).
    pub lambda: f64,
    /// Weight of each modality's kNN graph, in the order of the modality list
    /// [mm_image_weight = 0.1 for the first, 0.9 for the second]. Empty: equal weights.
    pub modality_weights: Vec<f32>,
    pub knn: KnnParams,
}

impl Default for FreedomParams {
    fn default() -> Self {
        Self {
            dim: 64,
            ui_layers: 2,
            mm_layers: 1,
            dropout: 0.8,
            lambda: 1e-4,
            modality_weights: vec![0.1, 0.9],
            knn: KnnParams::default(),
        }
    }
}

impl FreedomParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LearnError::Invalid(m));
        if self.dim == 0 {
            return bad("freedom dim must be > 0".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("freedom dropout must be in [0, 1), got {}", self.dropout));
        }
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return bad(format!("freedom lambda must be >= 0, got {}", self.lambda));
        }
        if self.modality_weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return bad("freedom modality weights must be finite and >= 0".into());
        }
        if self.knn.k == 0 {
            return bad("freedom knn k must be > 0".into());
        }
        Ok(())
    }

    /// The graph weights for `n` modalities: the configured ones when they match, MMRec's
    /// [0.1, 0.9] cut to one modality as [1.0], otherwise equal weights.
    pub fn weights_for(&self, n: usize) -> Result<Vec<f32>> {
        if self.modality_weights.len() == n {
            Ok(self.modality_weights.clone())
        } else if self.modality_weights.is_empty() || n == 1 {
            Ok(vec![1.0 / n as f32; n])
        } else {
            Err(LearnError::Invalid(format!(
                "{} modality weights configured for {n} modalities",
                self.modality_weights.len()
            )))
        }
    }
}

/// Samples `keep` distinct indices of `weights` without replacement, each draw with probability
/// proportional to the weight among those left (as `torch.multinomial(w, keep)`), by
/// Efraimidis-Spirakis keys `ln(u) / w`: the `keep` largest keys. Returned sorted.
pub fn weighted_sample_without_replacement(weights: &[f64], keep: usize, rng: &mut StdRng) -> Vec<usize> {
    let keep = keep.min(weights.len());
    let mut keys: Vec<(f64, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            let key = if w > 0.0 { u.ln() / w } else { f64::NEG_INFINITY };
            (key, i)
        })
        .collect();
    let cmp = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if keep < keys.len() && keep > 0 {
        keys.select_nth_unstable_by(keep - 1, cmp);
    }
    let mut out: Vec<usize> = keys[..keep].iter().map(|k| k.1).collect();
    out.sort_unstable();
    out
}

pub struct Freedom {
    n_users: usize,
    n_items: usize,
    user: Var,
    item: Var,
    feats: Vec<Var>,
    trs: Vec<Linear>,
    full: SparseOp,
    masked: SparseOp,
    mm: SparseOp,
    /// Per modality, the kNN lists `mm` was built from.
    neighbours: Vec<Vec<Vec<u32>>>,
    /// De-duplicated train edges and their sampling weights 1/sqrt(d_u d_i).
    edges: Vec<(u32, u32)>,
    edge_w: Vec<f64>,
    params: FreedomParams,
    /// Full-size scratch buffers of the fused loss.
    ws: Arc<Workspace>,
}

impl Freedom {
    /// Builds FREEDOM on the train edges (user, item), with the item-item graph from the raw
    /// `modalities` (each [n_items, d_m]).
    pub fn new(
        n_users: usize,
        n_items: usize,
        train: &[(u32, u32)],
        modalities: &[Modality],
        params: &FreedomParams,
        dtype: DType,
        rng: &mut StdRng,
    ) -> Result<Self> {
        params.validate()?;
        check_modalities(n_items, modalities)?;
        if let Some(&(u, i)) = train.iter().find(|&&(u, i)| u as usize >= n_users || i as usize >= n_items) {
            return Err(LearnError::Invalid(format!(
                "train edge ({u}, {i}) outside {n_users} users x {n_items} items"
            )));
        }
        let mut edges = train.to_vec();
        edges.sort_unstable();
        edges.dedup();
        let (mut du, mut di) = (vec![0f64; n_users], vec![0f64; n_items]);
        for &(u, i) in &edges {
            du[u as usize] += 1.0;
            di[i as usize] += 1.0;
        }
        let edge_w = edges.iter().map(|&(u, i)| 1.0 / (du[u as usize] * di[i as usize]).sqrt()).collect();

        let weights = params.weights_for(modalities.len())?;
        let mods: Vec<(usize, &[f32])> = modalities.iter().map(|m| (m.dim, m.data.as_slice())).collect();
        let (mm, neighbours) = item_graph_with_neighbours(n_items, &mods, &weights, &params.knn)?;
        let mm = SparseOp::new(Arc::new(mm));
        let full = SparseOp::symmetric(Arc::new(normalized_bipartite(n_users, n_items, &edges)));

        let d = params.dim;
        let user = xavier_var(n_users, d, dtype, rng)?;
        let item = xavier_var(n_items, d, dtype, rng)?;
        let mut feats = Vec::with_capacity(modalities.len());
        let mut trs = Vec::with_capacity(modalities.len());
        for m in modalities {
            let t = Tensor::from_slice(&m.data, (n_items, m.dim), &Device::Cpu)?.to_dtype(dtype)?;
            feats.push(Var::from_tensor(&t)?);
            trs.push(Linear::torch_default(m.dim, d, dtype, rng)?);
        }
        Ok(Self {
            n_users,
            n_items,
            user,
            item,
            feats,
            trs,
            masked: full.clone(),
            full,
            mm,
            neighbours,
            edges,
            edge_w,
            params: params.clone(),
            ws: Arc::new(Workspace::default()),
        })
    }

    /// The user-item edges kept by degree-sensitive pruning (indices into the de-duplicated,
    /// sorted train edges).
    pub fn prune(&self, rng: &mut StdRng) -> Vec<(u32, u32)> {
        let keep = (self.edges.len() as f64 * (1.0 - self.params.dropout)) as usize;
        weighted_sample_without_replacement(&self.edge_w, keep, rng).into_iter().map(|k| self.edges[k]).collect()
    }

    /// The item-item graph (for inspection and tests).
    pub fn item_graph(&self) -> &Arc<super::sparse::Csr> {
        self.mm.matrix()
    }

    /// The user-item graph used by the next training batches.
    pub fn train_graph(&self) -> &Arc<super::sparse::Csr> {
        self.masked.matrix()
    }

    /// (users [U, d], items [I, d]) through the user-item graph `adj`.
    fn forward(&self, adj: &SparseOp) -> Result<(Tensor, Tensor)> {
        let mut h = self.item.as_tensor().clone();
        for _ in 0..self.params.mm_layers {
            h = self.mm.apply(&h)?;
        }
        let ego = Tensor::cat(&[self.user.as_tensor(), self.item.as_tensor()], 0)?;
        let all = adj.propagate_mean(&ego, self.params.ui_layers)?;
        let u = all.narrow(0, 0, self.n_users)?;
        let i = all.narrow(0, self.n_users, self.n_items)?.add(&h)?;
        Ok((u, i))
    }
}

impl Recommender for Freedom {
    fn name(&self) -> &'static str {
        "freedom"
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v = vec![("user".to_string(), self.user.clone()), ("item".to_string(), self.item.clone())];
        if self.params.lambda == 0.0 {
            // The feature tables and projections only enter the loss through lambda.
            return v;
        }
        for (m, (f, t)) in self.feats.iter().zip(&self.trs).enumerate() {
            v.push((format!("feat{m}"), f.clone()));
            v.push((format!("trs{m}.weight"), t.weight.clone()));
            v.push((format!("trs{m}.bias"), t.bias.clone()));
        }
        v
    }

    fn batch_loss(&self, batch: &Batch) -> Result<Tensor> {
        let (ua, ia) = self.forward(&self.masked)?;
        let u = ua.index_select(&batch.users, 0)?;
        let mut loss = bpr_loss(&u, &ia.index_select(&batch.pos, 0)?, &ia.index_select(&batch.neg, 0)?)?;
        if self.params.lambda > 0.0 {
            for (f, t) in self.feats.iter().zip(&self.trs) {
                // T(i+) and T(i-) share the bias, which cancels in the BPR difference: its
                // gradient is exactly zero, so it is left out of autograd (rounding noise in
                // its place would drive Adam's normalised steps)
                let proj = |ids: &Tensor| -> Result<Tensor> {
                    let x = f.as_tensor().index_select(ids, 0)?;
                    Ok(x.matmul(&t.weight.as_tensor().t()?)?.broadcast_add(&t.bias.as_detached_tensor())?)
                };
                let (p, n) = (proj(&batch.pos)?, proj(&batch.neg)?);
                loss = loss.add(&bpr_loss(&u, &p, &n)?.affine(self.params.lambda, 0.0)?)?;
            }
        }
        Ok(loss)
    }

    /// The fused kernel (`freedom/fused.rs`) on the CPU's fused path, autograd on [`Self::batch_loss`]
    /// otherwise.
    fn loss_and_grads(&self, batch: &Batch) -> Result<LossGrads> {
        if !self.full.path().fused_on(self.user.device()) {
            return Ok(LossGrads::autograd(self.batch_loss(batch)?));
        }
        match self.user.dtype() {
            DType::F32 => self.fused_loss::<f32>(batch),
            DType::F64 => self.fused_loss::<f64>(batch),
            dt => Err(LearnError::Invalid(format!("FREEDOM parameters must be f32 or f64, not {dt:?}"))),
        }
    }

    fn on_epoch_start(&mut self, rng: &mut StdRng) -> Result<()> {
        if self.params.dropout <= 0.0 {
            self.masked = self.full.clone();
            return Ok(());
        }
        let kept = self.prune(rng);
        self.masked = SparseOp::symmetric(Arc::new(normalized_bipartite(self.n_users, self.n_items, &kept)))
            .with_path(self.full.path());
        Ok(())
    }

    fn embeddings(&self) -> Result<(Tensor, Tensor)> {
        self.forward(&self.full)
    }

    /// The graph's parts (none for a symmetrised graph: adding an item there changes other
    /// items' degrees, which the serving-side extension does not model).
    fn item_graph_parts(&self) -> Result<Option<ItemGraphParts>> {
        if self.params.knn.symmetrize {
            return Ok(None);
        }
        Ok(Some(ItemGraphParts {
            k: self.params.knn.k,
            layers: self.params.mm_layers,
            weights: self.params.weights_for(self.neighbours.len())?,
            neighbours: self.neighbours.clone(),
            item_id: self.item.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        }))
    }

    fn place(&mut self, device: &Device, path: OpPath) -> Result<()> {
        self.user = var_on(&self.user, device)?;
        self.item = var_on(&self.item, device)?;
        self.feats = self.feats.iter().map(|f| var_on(f, device)).collect::<Result<_>>()?;
        self.trs = self.trs.iter().map(|t| t.on(device)).collect::<Result<_>>()?;
        self.full = self.full.clone().with_path(path);
        self.masked = self.masked.clone().with_path(path);
        self.mm = self.mm.clone().with_path(path);
        Ok(())
    }
}
