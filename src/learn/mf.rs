//! MF-BPR (MMRec's `BPR`): user and item tables (xavier-uniform), scores `<e_u, e_i>`,
//! loss = BPR + `reg` * EmbLoss of the batch rows.

use super::model::{bpr_loss, emb_reg, var_on, xavier_uniform, Batch, Recommender};
use super::{OpPath, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;

pub struct MfBpr {
    users: Var,
    items: Var,
    reg: f64,
}

impl MfBpr {
    pub fn new(n_users: usize, n_items: usize, dim: usize, reg: f64, dtype: DType, rng: &mut StdRng) -> Result<Self> {
        let dev = Device::Cpu;
        let u = Tensor::from_vec(xavier_uniform(n_users, dim, rng), (n_users, dim), &dev)?.to_dtype(dtype)?;
        let i = Tensor::from_vec(xavier_uniform(n_items, dim, rng), (n_items, dim), &dev)?.to_dtype(dtype)?;
        Ok(Self { users: Var::from_tensor(&u)?, items: Var::from_tensor(&i)?, reg })
    }
}

impl Recommender for MfBpr {
    fn name(&self) -> &'static str {
        "mf"
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        vec![("mf.user".into(), self.users.clone()), ("mf.item".into(), self.items.clone())]
    }

    fn batch_loss(&self, b: &Batch) -> Result<Tensor> {
        let u = self.users.index_select(&b.users, 0)?;
        let p = self.items.index_select(&b.pos, 0)?;
        let n = self.items.index_select(&b.neg, 0)?;
        let loss = bpr_loss(&u, &p, &n)?;
        if self.reg == 0.0 {
            return Ok(loss);
        }
        Ok(loss.add(&emb_reg(&[&u, &p, &n])?.affine(self.reg, 0.0)?)?)
    }

    fn embeddings(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.users.as_detached_tensor(), self.items.as_detached_tensor()))
    }

    fn place(&mut self, device: &Device, _path: OpPath) -> Result<()> {
        // tensor ops only: nothing depends on the path
        self.users = var_on(&self.users, device)?;
        self.items = var_on(&self.items, device)?;
        Ok(())
    }
}
