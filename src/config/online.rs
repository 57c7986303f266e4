use super::{Issues, Validate};
use crate::learn::model::ModelKind;
use crate::learn::optim::OptimName;
use serde::{Deserialize, Serialize};

/// The recommender fine-tune rounds train.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnlineModel {
    /// FREEDOM when the store holds item features (MiniLM text, BLIP image vectors), `learn.model`
    /// (LightGCN by default) otherwise; decided each round and logged.
    #[default]
    Auto,
    Mf,
    Lightgcn,
    /// Needs item features in the store (a round without any fails with a clear error).
    Vbpr,
    /// Needs item features in the store (a round without any fails with a clear error).
    Freedom,
}

impl OnlineModel {
    /// The model for a store that has (`true`) or lacks item features; `Err` names what is missing.
    pub fn resolve(self, learn_model: ModelKind, has_features: bool) -> Result<ModelKind, String> {
        let explicit = match self {
            OnlineModel::Auto => return Ok(if has_features { ModelKind::Freedom } else { learn_model }),
            OnlineModel::Mf => ModelKind::Mf,
            OnlineModel::Lightgcn => ModelKind::Lightgcn,
            OnlineModel::Vbpr => ModelKind::Vbpr,
            OnlineModel::Freedom => ModelKind::Freedom,
        };
        if matches!(explicit, ModelKind::Vbpr | ModelKind::Freedom) && !has_features {
            return Err(format!(
                "online.model = {explicit:?} needs item features (MiniLM text or BLIP image vectors) and the store has none; \
                 use \"auto\" to train {learn_model:?} until they exist"
            ));
        }
        Ok(explicit)
    }
}

/// The on-device learning loop: when to fine-tune, within which budget, and the promotion gate.
/// Model shape and optimiser hyper-parameters come from `[learn]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineConfig {
    /// Run fine-tune rounds inside the daemon (the active model is served either way).
    pub enabled: bool,
    /// A round starts once this many new interactions arrived since the last round ...
    pub min_new_events: u64,
    /// ... and at least this many seconds passed since the last round.
    pub min_interval_s: u64,
    /// Seconds between checks (new events, registry changes, new items with features).
    pub poll_s: u64,
    /// Wall-clock budget of one round's training, in seconds (checked between epochs).
    pub time_budget_s: u64,
    /// Estimated training memory above which a round is skipped, in MiB.
    pub memory_budget_mb: u64,
    /// Epoch cap per round.
    pub epochs: usize,
    /// Stop a round after this many epochs without a better valid Recall@20 (0 = never).
    pub patience: usize,
    /// Newest interactions per user held out: a random half of those users picks the candidate's
    /// best epoch, the other half compares candidate and active (`online::round`).
    pub holdout_per_user: usize,
    /// Promotion gate: the candidate's Recall@20 and NDCG@20 on the gate half may be at most this
    /// much (absolute) below the active model's.
    pub tolerance: f64,
    /// Recommender of fine-tune rounds: auto | mf | lightgcn | vbpr | freedom (shape from `[learn]`).
    pub model: OnlineModel,
    /// Optimiser of fine-tune rounds: adam | sam | mg | sgbd (hyper-parameters from `[learn]`).
    pub optim: OptimName,
    /// Threads of the (niced) training pool; 0 = one per core.
    pub train_threads: usize,
    /// Nice value of the training threads (0..=19).
    pub nice: i32,
    /// Kiosks with an event in the last this-many seconds get refreshed suggestions after a promotion.
    pub push_window_s: u64,
    /// Cold start: weight of store popularity against content similarity (0..=1).
    pub cold_popularity_weight: f64,
    /// Ridge penalty of the feature -> item-embedding projection for items without interactions.
    pub projection_ridge: f64,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_new_events: 500,
            min_interval_s: 600,
            poll_s: 2,
            time_budget_s: 300,
            memory_budget_mb: 1024,
            epochs: 30,
            patience: 5,
            holdout_per_user: 1,
            tolerance: 0.0,
            model: OnlineModel::Auto,
            optim: OptimName::Sgbd,
            train_threads: 0,
            nice: 10,
            push_window_s: 300,
            cold_popularity_weight: 0.3,
            projection_ridge: 1.0,
        }
    }
}

impl Validate for OnlineConfig {
    fn validate(&self, issues: &mut Issues) {
        issues.check(self.min_new_events >= 1, "online.min_new_events", "at least 1");
        issues.check(self.poll_s >= 1, "online.poll_s", "at least 1");
        issues.check(self.time_budget_s >= 1, "online.time_budget_s", "at least 1");
        issues.check(self.memory_budget_mb >= 16, "online.memory_budget_mb", "at least 16");
        issues.check(self.epochs >= 1, "online.epochs", "at least 1");
        issues.check(
            self.holdout_per_user >= 1,
            "online.holdout_per_user",
            "at least 1 (the gate needs a held-out slice)",
        );
        issues.check(self.tolerance >= 0.0 && self.tolerance < 1.0, "online.tolerance", "must be in [0, 1)");
        issues.check((0..=19).contains(&self.nice), "online.nice", "must be in 0..=19");
        issues.check(
            (0.0..=1.0).contains(&self.cold_popularity_weight),
            "online.cold_popularity_weight",
            "must be in [0, 1]",
        );
        issues.check(
            self.projection_ridge > 0.0 && self.projection_ridge.is_finite(),
            "online.projection_ridge",
            "must be > 0",
        );
    }
}
