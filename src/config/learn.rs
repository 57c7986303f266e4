use super::{Issues, Validate};
use crate::learn::model::ModelKind;
use crate::learn::optim::{OptimName, Variant as SgbdVariant};
use crate::learn::sampler::Negatives;
use serde::{Deserialize, Serialize};

/// On-device training of the recommender (`sgbd-edge train` reads it; flags override it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LearnConfig {
    /// Train on the device at all.
    pub enabled: bool,
    pub model: ModelKind,
    pub optim: OptimName,
    pub variant: SgbdVariant,
    /// Embedding size.
    pub dim: usize,
    /// LightGCN propagation layers.
    pub layers: usize,
    /// Weight of MMRec's embedding regulariser.
    pub reg: f64,
    /// Adam learning rate (betas 0.9 / 0.999, eps 1e-8).
    pub lr: f64,
    pub batch: usize,
    /// Maximum epochs; early stopping usually ends training first.
    pub epochs: usize,
    /// Early stopping as MMRec: training stops after `patience + 1` consecutive epochs whose valid
    /// Recall@20 (rounded to 4 decimals) is not strictly above the best (0 = never stop early).
    pub patience: usize,
    /// Negative pool: `train` (MMRec: items that occur in train) or `all` (every item).
    pub negatives: Negatives,
    /// SAM radius (global L2 norm over all parameters).
    pub rho: f64,
    /// Mirror Gradient descent weight.
    pub alpha1: f64,
    /// Mirror Gradient mirror weight (must be < alpha1).
    pub alpha2: f64,
    /// Mirror Gradient period in batches.
    pub beta: usize,
    pub seed: u64,
    /// Users per block in full-ranking evaluation (bounds memory).
    pub eval_block: usize,
    /// Store data: per user, the last `test_per_user` interactions are test, the
    /// `valid_per_user` before them valid.
    pub valid_per_user: usize,
    pub test_per_user: usize,
    /// FREEDOM: fraction of user-item edges dropped each epoch.
    pub dropout: f64,
    /// FREEDOM: weight of the per-modality BPR terms.
    pub mm_lambda: f64,
    /// Where training runs: `cpu`, `cuda` or `auto` (CUDA needs a build with `--features cuda`;
    /// without a GPU it falls back to the CPU with a log line).
    pub device: crate::device::DevicePref,
}

impl Default for LearnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: ModelKind::Lightgcn,
            optim: OptimName::Sgbd,
            variant: SgbdVariant::S1,
            dim: 64,
            layers: 2,
            reg: 1e-4,
            lr: 1e-3,
            batch: 2048,
            epochs: 1000,
            patience: 20,
            negatives: Negatives::Train,
            rho: 0.05,
            alpha1: 1.0,
            alpha2: 0.2,
            beta: 3,
            seed: 999,
            eval_block: 1024,
            valid_per_user: 1,
            test_per_user: 1,
            dropout: 0.8,
            mm_lambda: 1e-4,
            device: crate::device::DevicePref::Cpu,
        }
    }
}

impl Validate for LearnConfig {
    fn validate(&self, issues: &mut Issues) {
        issues.check((1..=4096).contains(&self.dim), "learn.dim", "must be in 1..=4096");
        issues.check(self.layers <= 8, "learn.layers", "must be <= 8");
        issues.check(self.reg >= 0.0 && self.reg.is_finite(), "learn.reg", "must be >= 0");
        issues.check(self.lr > 0.0 && self.lr.is_finite(), "learn.lr", "must be > 0");
        issues.check(self.batch > 0, "learn.batch", "must be > 0");
        issues.check(self.epochs > 0, "learn.epochs", "must be > 0");
        issues.check(self.rho >= 0.0 && self.rho.is_finite(), "learn.rho", "must be >= 0");
        issues.check(
            self.alpha2 >= 0.0 && self.alpha1 > self.alpha2,
            "learn.alpha2",
            "Mirror Gradient needs alpha1 > alpha2 >= 0",
        );
        issues.check(self.beta > 0, "learn.beta", "must be > 0");
        issues.check(self.eval_block > 0, "learn.eval_block", "must be > 0");
        issues.check((0.0..1.0).contains(&self.dropout), "learn.dropout", "must be in [0, 1)");
        issues.check(self.mm_lambda >= 0.0 && self.mm_lambda.is_finite(), "learn.mm_lambda", "must be >= 0");
    }
}
