//! LightGCN (MMRec form): one table of user and item embeddings (users first), propagated over
//! `D^-1/2 A D^-1/2` of the train graph, final = mean over layers 0..L,
//! loss = BPR on the final embeddings + `reg` * EmbLoss of the layer-0 batch rows.
//!
//! The batch loss is one fused kernel ([`LightGcn::loss_and_grads`], and the same code as a
//! candle custom op in [`Recommender::batch_loss`] for autograd users):
//! - forward: layers `1..L-1` over the whole graph, the last layer only at the batch's distinct
//!   rows (the loss reads no other row), then BPR and EmbLoss from those rows;
//! - backward: `dE0 = mean_l (A^T)^l H + reg rows`, with `H` the gradient at the final rows,
//!   by Horner's rule; the first product reads `H` as a compact set of non-zero rows.
//!
//! The direct path hands the gradient to the optimiser without candle's gradient store (which
//! would add a zero-filled table and a full-size add per step) and recycles full-size scratch.
//!
//! Off the CPU (or on [`OpPath::TensorOps`]) the same loss is built from tensor ops (the graph's
//! tensor-op propagation, `index_select`, [`bpr_loss`], [`emb_reg`]) and differentiated by autograd.

use super::model::{bpr_loss, emb_reg, var_on, xavier_uniform, Batch, LossGrads, Recommender};
use super::sparse::{mul_rows, mul_selected_acc, normalized_bipartite, slice_of, Csr, Elem, SparseOp, Workspace};
use super::{LearnError, OpPath, Result};
use crate::kernels::sparse::NO_SLOT;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, Var};
use rand::rngs::StdRng;
use rayon::prelude::*;
use std::sync::Arc;

pub struct LightGcn {
    ego: Var,
    n_users: usize,
    n_items: usize,
    layers: usize,
    reg: f64,
    graph: SparseOp,
    ws: Arc<Workspace>,
    path: OpPath,
}

impl LightGcn {
    /// `edges` are the train (user, item) pairs. Tables are xavier-uniform per table, as MMRec.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n_users: usize,
        n_items: usize,
        edges: &[(u32, u32)],
        dim: usize,
        layers: usize,
        reg: f64,
        dtype: DType,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let mut init = xavier_uniform(n_users, dim, rng);
        init.extend(xavier_uniform(n_items, dim, rng));
        let t = Tensor::from_vec(init, (n_users + n_items, dim), &Device::Cpu)?.to_dtype(dtype)?;
        let graph = SparseOp::symmetric(Arc::new(normalized_bipartite(n_users, n_items, edges)));
        Ok(Self {
            ego: Var::from_tensor(&t)?,
            n_users,
            n_items,
            layers,
            reg,
            graph,
            ws: Arc::new(Workspace::default()),
            path: OpPath::Fused,
        })
    }

    /// Whether the fused CPU kernel computes the loss.
    fn fused(&self) -> bool {
        self.path.fused_on(self.ego.device())
    }

    /// The loss from tensor ops (any device): BPR on the propagated rows + `reg` * EmbLoss of
    /// the layer-0 rows, the fused kernel's formula.
    fn tensor_loss(&self, b: &Batch) -> Result<Tensor> {
        let max_id = |t: &Tensor| -> Result<usize> {
            Ok(if t.dim(0)? == 0 { 0 } else { t.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()? as usize })
        };
        if b.is_empty() || max_id(&b.users)? >= self.n_users || max_id(&b.pos)?.max(max_id(&b.neg)?) >= self.n_items {
            return Err(LearnError::Invalid("empty batch or a user or item id out of range".into()));
        }
        let ego = self.ego.as_tensor();
        let all = self.graph.propagate_mean(ego, self.layers)?;
        let split = |t: &Tensor| -> Result<(Tensor, Tensor)> {
            Ok((t.narrow(0, 0, self.n_users)?, t.narrow(0, self.n_users, self.n_items)?))
        };
        let rows = |(us, is): &(Tensor, Tensor)| -> Result<[Tensor; 3]> {
            Ok([us.index_select(&b.users, 0)?, is.index_select(&b.pos, 0)?, is.index_select(&b.neg, 0)?])
        };
        let [u, p, n] = rows(&split(&all)?)?;
        let loss = bpr_loss(&u, &p, &n)?;
        if self.reg == 0.0 {
            return Ok(loss);
        }
        let [u0, p0, n0] = rows(&split(ego)?)?;
        Ok(loss.add(&emb_reg(&[&u0, &p0, &n0])?.affine(self.reg, 0.0)?)?)
    }

    fn op(&self, rows: BatchRows) -> BprOp {
        BprOp {
            a: self.graph.matrix().clone(),
            at: self.graph.transposed().clone(),
            layers: self.layers,
            reg: self.reg,
            rows,
            ws: self.ws.clone(),
        }
    }
}

impl Recommender for LightGcn {
    fn name(&self) -> &'static str {
        "lightgcn"
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        vec![("lightgcn.ego".into(), self.ego.clone())]
    }

    fn batch_loss(&self, b: &Batch) -> Result<Tensor> {
        if !self.fused() {
            return self.tensor_loss(b);
        }
        let op = self.op(BatchRows::of_batch(b, self.n_users, self.n_items)?);
        Ok(self.ego.as_tensor().apply_op1(op)?)
    }

    fn loss_and_grads(&self, b: &Batch) -> Result<LossGrads> {
        if !self.fused() {
            return Ok(LossGrads::autograd(self.tensor_loss(b)?));
        }
        let op = self.op(BatchRows::of_batch(b, self.n_users, self.n_items)?);
        let x = self.ego.as_tensor();
        let (_, d) = x.dims2()?;
        let (loss, grad) = {
            let (st, l) = x.storage_and_layout();
            let candle_core::Storage::Cpu(st) = &*st else {
                return Err(LearnError::Invalid("LightGCN's fused loss runs on the CPU only".into()));
            };
            match st {
                CpuStorage::F32(v) => {
                    let (loss, g) = op.run(slice_of(v, l)?, d, Some(1.0))?;
                    (Tensor::new(loss as f32, &Device::Cpu)?, g.map(|g| Tensor::from_vec(g, x.shape(), &Device::Cpu)))
                }
                CpuStorage::F64(v) => {
                    let (loss, g) = op.run(slice_of(v, l)?, d, Some(1.0))?;
                    (Tensor::new(loss, &Device::Cpu)?, g.map(|g| Tensor::from_vec(g, x.shape(), &Device::Cpu)))
                }
                _ => return Err(LearnError::Invalid("LightGCN parameters must be f32 or f64".into())),
            }
        };
        let grad = grad.ok_or_else(|| LearnError::Invalid("fused LightGCN backward gave no gradient".into()))??;
        Ok(LossGrads { loss, grads: Some(vec![grad]) })
    }

    fn embeddings(&self) -> Result<(Tensor, Tensor)> {
        let all = self.graph.propagate_mean(&self.ego.as_detached_tensor(), self.layers)?;
        Ok((all.narrow(0, 0, self.n_users)?, all.narrow(0, self.n_users, self.n_items)?))
    }

    fn place(&mut self, device: &Device, path: OpPath) -> Result<()> {
        self.ego = var_on(&self.ego, device)?;
        self.graph = self.graph.clone().with_path(path);
        self.path = path;
        Ok(())
    }
}

/// The node rows a batch touches (LightGCN's and FREEDOM's fused losses).
pub(super) struct BatchRows {
    /// `3B` node ids: users, positives, negatives.
    pub(super) idx: Vec<u32>,
    /// Distinct node ids, ascending.
    pub(super) uniq: Vec<u32>,
    /// Node -> position in `uniq` (`NO_SLOT` when absent), one entry per node.
    pub(super) slot: Vec<u32>,
    /// `uniq[..user_slots]` are users, the rest items.
    pub(super) user_slots: usize,
}

impl BatchRows {
    /// The batch's node rows `[users; n_users + pos; n_users + neg]`, checked against the
    /// `n_users + n_items` nodes.
    pub(super) fn of_batch(b: &Batch, n_users: usize, n_items: usize) -> Result<Self> {
        let users: Vec<u32> = b.users.to_vec1()?;
        let pos: Vec<u32> = b.pos.to_vec1()?;
        let neg: Vec<u32> = b.neg.to_vec1()?;
        let n = users.len();
        if n == 0 || pos.len() != n || neg.len() != n {
            return Err(LearnError::Invalid("empty batch or batch vectors of different lengths".into()));
        }
        if users.iter().any(|&u| u as usize >= n_users) || pos.iter().chain(&neg).any(|&i| i as usize >= n_items) {
            return Err(LearnError::Invalid("batch holds a user or item id out of range".into()));
        }
        let off = n_users as u32;
        let mut idx = users;
        idx.extend(pos.iter().map(|&i| i + off));
        idx.extend(neg.iter().map(|&i| i + off));
        Ok(Self::new(idx, n_users + n_items, n_users))
    }

    /// `idx`: node ids, users first (`n_users` of the nodes).
    fn new(idx: Vec<u32>, n_nodes: usize, n_users: usize) -> Self {
        let mut slot = vec![NO_SLOT; n_nodes];
        for &r in &idx {
            slot[r as usize] = 0;
        }
        let mut uniq = Vec::with_capacity(idx.len());
        for (r, s) in slot.iter_mut().enumerate() {
            if *s != NO_SLOT {
                *s = uniq.len() as u32;
                uniq.push(r as u32);
            }
        }
        let user_slots = uniq.partition_point(|&r| (r as usize) < n_users);
        Self { idx, uniq, slot, user_slots }
    }

    pub(super) fn batch(&self) -> usize {
        self.idx.len() / 3
    }

    /// Compact position of the `k`-th batch row.
    pub(super) fn at(&self, k: usize) -> usize {
        self.slot[self.idx[k] as usize] as usize
    }
}

/// The fused LightGCN BPR loss of one batch, a scalar function of the embedding table.
struct BprOp {
    a: Arc<Csr>,
    at: Arc<Csr>,
    layers: usize,
    reg: f64,
    rows: BatchRows,
    ws: Arc<Workspace>,
}

pub(super) fn dot<T: Elem>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x.to_f64() * y.to_f64()).sum()
}

/// `o += c * v`.
pub(super) fn axpy_row<T: Elem>(o: &mut [T], c: f64, v: &[T]) {
    let c = T::from_f64(c);
    for (ov, &vv) in o.iter_mut().zip(v) {
        *ov += c * vv;
    }
}

/// `log(sigmoid(x))`, stable.
fn log_sigmoid(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// MMRec's BPR loss from a batch's score differences `z_k = <u, i+> - <u, i->`:
/// `-mean log sigmoid(z)`.
pub(super) fn bpr_mean(z: &[f64]) -> f64 {
    -z.iter().map(|&z| log_sigmoid(z)).sum::<f64>() / z.len().max(1) as f64
}

/// `d(w * bpr_mean(z)) / dz_k = -w sigmoid(-z_k) / B` for each `k`.
pub(super) fn bpr_coefs(z: &[f64], w: f64) -> Vec<f64> {
    let b = z.len().max(1) as f64;
    z.iter().map(|&z| -w / b / (1.0 + z.exp())).collect()
}

/// LightGCN's layer mean `mean_{l=0..L} A^l x` restricted to a batch's rows, and its
/// transpose (shared by LightGCN's and FREEDOM's fused losses).
pub(super) struct LayerMean<'a> {
    pub(super) a: &'a Csr,
    pub(super) at: &'a Csr,
    pub(super) layers: usize,
    pub(super) ws: &'a Workspace,
}

impl LayerMean<'_> {
    /// The layer mean at the nodes `uniq` (ascending), compact `[uniq, d]`: layers `1..L-1`
    /// over the whole graph (their batch rows join the sum), the last one at `uniq` only.
    pub(super) fn rows<T: Elem>(&self, x: &[T], d: usize, uniq: &[u32]) -> Vec<T> {
        let mut fin: Vec<T> = Vec::with_capacity(uniq.len() * d);
        for &r in uniq {
            fin.extend_from_slice(&x[r as usize * d..(r as usize + 1) * d]);
        }
        if self.layers == 0 {
            return fin;
        }
        let n = self.a.n_rows;
        let mut cur: Option<Vec<T>> = None;
        for _ in 1..self.layers {
            let mut next = self.ws.take::<T>(n * d);
            mul_rows(self.a, cur.as_deref().unwrap_or(x), None, d, &mut next, |_, _| {});
            for (f, &r) in fin.chunks_mut(d).zip(uniq) {
                axpy_row(f, 1.0, &next[r as usize * d..(r as usize + 1) * d]);
            }
            if let Some(c) = cur.replace(next) {
                self.ws.give(c);
            }
        }
        let scale = T::from_f64(1.0 / (self.layers as f64 + 1.0));
        mul_selected_acc(self.a, uniq, cur.as_deref().unwrap_or(x), d, &mut fin, |f| {
            f.iter_mut().for_each(|v| *v = *v * scale)
        });
        if let Some(c) = cur {
            self.ws.give(c);
        }
        fin
    }

    /// The gradient with respect to `x` (full `[n, d]`) of the rows above, given `h`, the
    /// gradient at the compact rows (`slot`: node -> row of `h`): `mean_{l<=L} (A^T)^l H` by
    /// Horner's rule (`S = H; S = H + A^T S`, L times; `S / (L+1)`), the sums done per row right
    /// after the row's product; then `extra(row, out_row)` adds the caller's own terms. The
    /// first product reads `h` as compact non-zero rows.
    pub(super) fn grad<T: Elem>(
        &self,
        h: &[T],
        slot: &[u32],
        d: usize,
        extra: impl Fn(usize, &mut [T]) + Sync,
    ) -> Vec<T> {
        let n = self.a.n_rows;
        let scale = T::from_f64(1.0 / (self.layers as f64 + 1.0));
        let epilogue = |r: usize, o: &mut [T], last: bool| {
            let s = slot[r];
            if s != NO_SLOT {
                let s = s as usize;
                for (ov, &hv) in o.iter_mut().zip(&h[s * d..(s + 1) * d]) {
                    *ov += hv;
                }
            }
            if last {
                o.iter_mut().for_each(|v| *v = *v * scale);
                extra(r, o);
            }
        };
        if self.layers == 0 {
            let mut g = vec![T::default(); n * d];
            g.par_chunks_mut(d.max(1)).with_min_len(256).enumerate().for_each(|(r, o)| epilogue(r, o, true));
            return g;
        }
        let buf = |l: usize| {
            if l == self.layers {
                vec![T::default(); n * d]
            } else {
                self.ws.take::<T>(n * d)
            }
        };
        let mut cur = buf(1);
        mul_rows(self.at, h, Some(slot), d, &mut cur, |r, o| epilogue(r, o, self.layers == 1));
        for l in 2..=self.layers {
            let mut next = buf(l);
            mul_rows(self.at, &cur, None, d, &mut next, |r, o| epilogue(r, o, l == self.layers));
            self.ws.give(std::mem::replace(&mut cur, next));
        }
        cur
    }
}

impl BprOp {
    fn layer_mean(&self) -> LayerMean<'_> {
        LayerMean { a: &self.a, at: &self.at, layers: self.layers, ws: &self.ws }
    }

    /// Loss and, when `grad_out` is given, `grad_out * dloss/dx` (full table).
    fn run<T: Elem>(&self, x: &[T], d: usize, grad_out: Option<f64>) -> Result<(f64, Option<Vec<T>>)> {
        let n = self.a.n_rows;
        if x.len() != n * d || self.a.n_cols != n || self.at.n_rows != n {
            return Err(LearnError::Invalid(format!(
                "LightGCN table has {} values, graph {}x{} with d {d}",
                x.len(),
                self.a.n_rows,
                self.a.n_cols
            )));
        }
        let fin = self.layer_mean().rows(x, d, &self.rows.uniq);
        let rows = &self.rows;
        let b = rows.batch();
        let row = |k: usize| {
            let s = rows.at(k);
            &fin[s * d..(s + 1) * d]
        };
        let x_row = |k: usize| {
            let r = rows.idx[k] as usize;
            &x[r * d..(r + 1) * d]
        };
        // BPR: -mean log sigmoid(<u, p> - <u, n>); EmbLoss: sum of the three Frobenius norms / B
        let diffs: Vec<f64> = (0..b)
            .into_par_iter()
            .with_min_len(256)
            .map(|k| dot(row(k), row(b + k)) - dot(row(k), row(2 * b + k)))
            .collect();
        let bpr = bpr_mean(&diffs);
        let norms: Vec<f64> = (0..3)
            .map(|j| {
                (j * b..(j + 1) * b)
                    .into_par_iter()
                    .with_min_len(256)
                    .map(|k| dot(x_row(k), x_row(k)))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let loss = if self.reg == 0.0 { bpr } else { bpr + self.reg * norms.iter().sum::<f64>() / b as f64 };
        let Some(go) = grad_out else { return Ok((loss, None)) };

        // H = d loss / d final rows, compact; user and item rows are disjoint, so in parallel
        let cs = bpr_coefs(&diffs, go);
        let mut h = vec![T::default(); fin.len()];
        let (hu, hi) = h.split_at_mut(rows.user_slots * d);
        let item_off = rows.user_slots;
        rayon::join(
            || {
                for (k, &c) in cs.iter().enumerate() {
                    let su = rows.at(k);
                    axpy_row(&mut hu[su * d..(su + 1) * d], c, row(b + k));
                    axpy_row(&mut hu[su * d..(su + 1) * d], -c, row(2 * b + k));
                }
            },
            || {
                for (k, &c) in cs.iter().enumerate() {
                    let (sp, sn) = (rows.at(b + k) - item_off, rows.at(2 * b + k) - item_off);
                    axpy_row(&mut hi[sp * d..(sp + 1) * d], c, row(k));
                    axpy_row(&mut hi[sn * d..(sn + 1) * d], -c, row(k));
                }
            },
        );
        // EmbLoss: d/dx_r = sum over the three parts j of (occurrences of r in j) * c_j * x_r
        let mut rc = vec![0f64; rows.uniq.len()];
        if self.reg != 0.0 {
            for (j, &nj) in norms.iter().enumerate() {
                if nj > 0.0 {
                    let c = go * self.reg / (b as f64 * nj);
                    (j * b..(j + 1) * b).for_each(|k| rc[rows.at(k)] += c);
                }
            }
        }
        // dx = mean_{l<=L} (A^T)^l H + EmbLoss rows
        let slot = &rows.slot;
        let grad = self.layer_mean().grad(&h, slot, d, |r, o| {
            let s = slot[r];
            if s != NO_SLOT && rc[s as usize] != 0.0 {
                axpy_row(o, rc[s as usize], &x[r * d..(r + 1) * d]);
            }
        });
        Ok((loss, Some(grad)))
    }
}

fn op_err(e: LearnError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

impl CustomOp1 for BprOp {
    fn name(&self) -> &'static str {
        "lightgcn-bpr"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        if dims.len() != 2 {
            candle_core::bail!("lightgcn-bpr: expected a [nodes, d] table, got {dims:?}");
        }
        let d = dims[1];
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(vec![self.run(slice_of(v, l)?, d, None).map_err(op_err)?.0 as f32]),
            CpuStorage::F64(v) => CpuStorage::F64(vec![self.run(slice_of(v, l)?, d, None).map_err(op_err)?.0]),
            _ => candle_core::bail!("lightgcn-bpr: only f32 and f64 are supported"),
        };
        Ok((out, Shape::from(())))
    }

    /// Recomputes the forward (the training loop uses [`LightGcn::loss_and_grads`] instead).
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let go = grad_res.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let x = arg.contiguous()?;
        let (_, d) = x.dims2()?;
        let g = match x.dtype() {
            DType::F32 => {
                let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
                let g = self.run(&v, d, Some(go)).map_err(op_err)?.1;
                g.map(|g| Tensor::from_vec(g, x.shape(), x.device())).transpose()?
            }
            DType::F64 => {
                let v: Vec<f64> = x.flatten_all()?.to_vec1()?;
                let g = self.run(&v, d, Some(go)).map_err(op_err)?.1;
                g.map(|g| Tensor::from_vec(g, x.shape(), x.device())).transpose()?
            }
            dt => candle_core::bail!("lightgcn-bpr: gradient dtype {dt:?}"),
        };
        Ok(g)
    }
}
