//! The one trait every recommender implements. Scores are always dot products of the final user
//! and item embeddings, so evaluation and serving need only [`Recommender::embeddings`].

use super::Result;
use candle_core::{Tensor, Var};
use rand::rngs::StdRng;

/// One training batch: B triples (user, positive item, negative item), u32 index tensors of shape [B].
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

    /// Hook at the start of each epoch (FREEDOM resamples its pruned user-item graph here).
    fn on_epoch_start(&mut self, _rng: &mut StdRng) -> Result<()> {
        Ok(())
    }

    /// Final (users [U, d], items [I, d]) embeddings for full ranking, computed without pruning.
    fn embeddings(&self) -> Result<(Tensor, Tensor)>;
}
