//! Ranking for kiosk requests: the [`Ranker`] trait, the hot-swappable [`RankerSlot`] the daemon
//! serves from, the store-popularity fallback ranker, and the short reply cache that answers QoS 1
//! redeliveries.
//!
//! Serving is from memory only: a request never touches SQLite. A later issue swaps a trained model
//! into the slot (`RankerSlot::swap`); a request in flight keeps the `Arc` it started with, so no
//! swap happens in the middle of a request.

mod cache;
mod popularity;

pub use cache::ReplyCache;
pub use popularity::{PopularityRanker, POPULARITY_VERSION};

use crate::mqtt::contract::RecItem;
use crate::store::Event;
use std::sync::{Arc, RwLock};

/// Errors of the serving concern.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What a ranker may know about the request besides the user.
#[derive(Debug, Clone, Default)]
pub struct RequestCtx {
    pub kiosk: Option<String>,
    /// SKUs the kiosk asked to leave out.
    pub exclude: Vec<String>,
    pub now_ms: i64,
}

/// A ranked answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub model_version: String,
    /// When the ranking was computed (ms UTC).
    pub generated_at: i64,
    /// True when popularity / content similarity served it (cold start, no trained model).
    pub fallback: bool,
    pub items: Vec<RecItem>,
}

/// A recommender the daemon can serve from.
pub trait Ranker: Send + Sync {
    /// The `k` best items for `user`, excluding what the ranker's exclusion rules and `ctx` say.
    fn recommend(&self, user: &str, k: usize, ctx: &RequestCtx) -> Recommendation;
    /// The version string replies carry.
    fn model_version(&self) -> String;
    /// Newly stored events (called by the ingest stage after commit), for incremental updates.
    fn observe(&self, _events: &[Event]) {}
}

/// The ranker being served, swappable atomically while requests are served.
pub struct RankerSlot {
    current: RwLock<Arc<dyn Ranker>>,
}

impl RankerSlot {
    pub fn new(r: Arc<dyn Ranker>) -> Self {
        Self { current: RwLock::new(r) }
    }

    /// The ranker to use for one request (cheap: clones an `Arc`).
    pub fn get(&self) -> Arc<dyn Ranker> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Installs `r` and returns the previous ranker.
    pub fn swap(&self, r: Arc<dyn Ranker>) -> Arc<dyn Ranker> {
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *g, r)
    }
}
