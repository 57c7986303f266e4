//! LightGCN (MMRec form): one table of user and item embeddings (users first), propagated over
//! `D^-1/2 A D^-1/2` of the train graph, final = mean over layers 0..L (the fused CSR op),
//! loss = BPR on the final embeddings + `reg` * EmbLoss of the layer-0 batch rows.

use super::model::{bpr_loss, emb_reg, xavier_uniform, Batch, Recommender};
use super::sparse::{normalized_bipartite, SparseOp};
use super::Result;
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use std::sync::Arc;

pub struct LightGcn {
    ego: Var,
    n_users: usize,
    n_items: usize,
    layers: usize,
    reg: f64,
    graph: SparseOp,
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
        })
    }

    /// Row indices `[users; n_users + pos; n_users + neg]` into the node table.
    fn node_index(&self, b: &Batch) -> Result<Tensor> {
        let off = Tensor::new(&[self.n_users as u32], b.pos.device())?;
        let p = b.pos.broadcast_add(&off)?;
        let n = b.neg.broadcast_add(&off)?;
        Ok(Tensor::cat(&[&b.users, &p, &n], 0)?)
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
        let bs = b.len();
        let idx = self.node_index(b)?;
        // [final rows; layer-0 rows] of users, positives, negatives, in one fused op
        let rows = self.graph.propagate_gather(self.ego.as_tensor(), &idx, self.layers)?;
        let part = |k: usize| rows.narrow(0, k * bs, bs);
        let loss = bpr_loss(&part(0)?, &part(1)?, &part(2)?)?;
        if self.reg == 0.0 {
            return Ok(loss);
        }
        Ok(loss.add(&emb_reg(&[&part(3)?, &part(4)?, &part(5)?])?.affine(self.reg, 0.0)?)?)
    }

    fn embeddings(&self) -> Result<(Tensor, Tensor)> {
        let all = self.graph.propagate_mean(&self.ego.as_detached_tensor(), self.layers)?;
        Ok((
            all.narrow(0, 0, self.n_users)?,
            all.narrow(0, self.n_users, self.n_items)?,
        ))
    }
}
