//! The one trait every recommender implements. Scores are always dot products of the final user
//! and item embeddings, so evaluation and serving need only [`Recommender::embeddings`].

pub use super::optim::LossGrads;
use super::{OpPath, Result};
use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;

/// Which recommender (configuration and command line names).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Mf,
    #[default]
    Lightgcn,
    Vbpr,
    Freedom,
}

/// One training batch: B triples (user, positive item, negative item), u32 index tensors of shape `[B]`.
pub struct Batch {
    pub users: Tensor,
    pub pos: Tensor,
    pub neg: Tensor,
}

pub trait Recommender: Send {
    /// Short name, e.g. "lightgcn".
    fn name(&self) -> &'static str;

    /// Trainable parameters with stable names (used by optimisers and checkpoints).
    fn named_vars(&self) -> Vec<(String, Var)>;

    /// Differentiable training loss on a batch (BPR plus the model's regularisers).
    fn batch_loss(&self, batch: &Batch) -> Result<Tensor>;

    /// The loss and, where the model has a fused kernel, its gradients (skipping autograd). The
    /// default leaves the gradients to autograd on [`Recommender::batch_loss`].
    fn loss_and_grads(&self, batch: &Batch) -> Result<LossGrads> {
        Ok(LossGrads::autograd(self.batch_loss(batch)?))
    }

    /// Hook at the start of each epoch (FREEDOM resamples its pruned user-item graph here).
    fn on_epoch_start(&mut self, _rng: &mut StdRng) -> Result<()> {
        Ok(())
    }

    /// Final (users [U, d], items [I, d]) embeddings for full ranking, computed without pruning.
    fn embeddings(&self) -> Result<(Tensor, Tensor)>;

    /// The item-item graph a model scores items through, for extending it to items added after
    /// training (FREEDOM); `None` for models without one.
    fn item_graph_parts(&self) -> Result<Option<super::knn::ItemGraphParts>> {
        Ok(None)
    }

    /// Moves the parameters and the model's fixed tensors to `device` and runs its ops on `path`
    /// ([`OpPath::for_device`] for the usual choice). Call it before building the optimiser:
    /// the optimiser holds the parameters it was given.
    fn place(&mut self, device: &Device, path: OpPath) -> Result<()>;

    /// The device the parameters are on.
    fn device(&self) -> Device {
        self.named_vars().first().map_or(Device::Cpu, |(_, v)| v.device().clone())
    }
}

/// A copy of the parameter `v` on `device` (a new variable).
pub fn var_on(v: &Var, device: &Device) -> Result<Var> {
    Ok(Var::from_tensor(&v.as_tensor().to_device(device)?)?)
}

impl Batch {
    /// Builds a batch from host index vectors (all the same length).
    pub fn from_vecs(users: Vec<u32>, pos: Vec<u32>, neg: Vec<u32>, device: &candle_core::Device) -> Result<Self> {
        let n = users.len();
        if pos.len() != n || neg.len() != n {
            return Err(super::LearnError::Invalid("batch vectors differ in length".into()));
        }
        Ok(Self {
            users: Tensor::from_vec(users, n, device)?,
            pos: Tensor::from_vec(pos, n, device)?,
            neg: Tensor::from_vec(neg, n, device)?,
        })
    }

    pub fn len(&self) -> usize {
        self.users.dims1().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `log(sigmoid(x))` from basic ops, numerically safe: `min(x, 0) - log(1 + exp(-|x|))`.
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let neg_abs = x.abs()?.neg()?;
    Ok(x.minimum(0.0)?.sub(&neg_abs.exp()?.affine(1.0, 1.0)?.log()?)?)
}

/// Row-wise dot products of two `[B, d]` tensors -> `[B]`.
pub fn row_dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.mul(b)?.sum(1)?)
}

/// MMRec's BPR loss: `-mean(log sigmoid(<u, i+> - <u, i->))`.
pub fn bpr_loss(u: &Tensor, pos: &Tensor, neg: &Tensor) -> Result<Tensor> {
    let diff = row_dot(u, pos)?.sub(&row_dot(u, neg)?)?;
    Ok(log_sigmoid(&diff)?.mean_all()?.neg()?)
}

/// MMRec's `EmbLoss`: sum of the Frobenius norms (not squared) of the tensors, divided by the
/// batch size (rows of the last tensor).
pub fn emb_reg(tensors: &[&Tensor]) -> Result<Tensor> {
    let b = tensors.last().map(|t| t.dim(0)).transpose()?.unwrap_or(1).max(1);
    let mut acc: Option<Tensor> = None;
    for t in tensors {
        let n = t.sqr()?.sum_all()?.sqrt()?;
        acc = Some(match acc {
            None => n,
            Some(a) => a.add(&n)?,
        });
    }
    match acc {
        Some(a) => Ok(a.affine(1.0 / b as f64, 0.0)?),
        None => Err(super::LearnError::Invalid("emb_reg of nothing".into())),
    }
}

/// Xavier-uniform values for a `[rows, cols]` table (`bound = sqrt(6 / (rows + cols))`), as
/// `torch.nn.init.xavier_uniform_` on an embedding weight.
pub fn xavier_uniform(rows: usize, cols: usize, rng: &mut StdRng) -> Vec<f32> {
    use rand::Rng;
    let bound = (6.0 / (rows + cols) as f64).sqrt() as f32;
    (0..rows * cols).map(|_| rng.random_range(-bound..bound)).collect()
}
