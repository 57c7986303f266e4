//! Serving a trained model from memory ([`OnlineRanker`], an `impl serve::Ranker`).
//!
//! - Known users: scores are dot products of the user's embedding with every item embedding; the
//!   best `k` are selected with `select_nth_unstable_by` (no full sort). Items of the user's
//!   `serve.exclude_kinds` interactions, the request's `exclude` list, and items whose attributes
//!   say they are out of stock (`in_stock: false` or `stock: 0`) are never returned; an optional
//!   category filter ([`Filter`]) keeps one category.
//! - New items (features, no interactions) rank within one `online.poll_s` of their features
//!   being stored (the learning loop rebuilds the ranker when features change). Under FREEDOM they
//!   join the model's item-item kNN graph and are scored by its own propagation
//!   ([`super::item_graph`]); under the other models their embedding is the feature row times the
//!   projection learned at promotion.
//! - Cold-start users (not in the model): `w` x store popularity (normalised) + `(1 - w)` x
//!   content similarity (cosine of item features) to what they scanned or viewed recently,
//!   flagged `fallback: true`.
//! - Reasons: `similar_to:<sku>` (closest of the user's recent items, cosine > 0.5),
//!   `new_in_catalogue` (an item without interactions in training), `popular_in_store` (top 10 % popularity), else `for_you`.
//! - [`Ranker::observe`]: new events update exclusions, recent items and popularity at once.

use super::features::{project, ItemFeatures};
use super::Result;
use crate::config::Config;
use crate::mqtt::contract::RecItem;
use crate::registry::ServingModel;
use crate::serve::{Ranker, Recommendation, RequestCtx};
use crate::store::{Event, EventKind, Store};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::RwLock;

/// Recent items remembered per user (cold start profile, reasons).
const RECENT: usize = 5;

/// Optional request filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Keep only items whose category attribute equals this (case-insensitive).
    pub category: Option<String>,
}

#[derive(Default)]
struct Live {
    exclusions: HashMap<String, HashSet<u32>>,
    recent: HashMap<String, VecDeque<u32>>,
    pop: Vec<f32>,
    pop_max: f32,
    /// Popularity at the 90th percentile (for the `popular_in_store` reason).
    pop_p90: f32,
}

/// A trained model in memory, ready to serve.
pub struct OnlineRanker {
    version: String,
    dim: usize,
    user_index: HashMap<String, u32>,
    user_emb: Vec<f32>,
    items: Vec<String>,
    item_index: HashMap<String, u32>,
    item_emb: Vec<f32>,
    /// Items at or after this index had no interactions in training: scored through the item
    /// graph (`n_graph` of them, FREEDOM) or the projection.
    n_trained: usize,
    n_graph: usize,
    /// Unit feature row per item (for cold start), if the item has features.
    feat: ItemFeatures,
    item_feat: Vec<Option<u32>>,
    /// Never served: out of stock, or not in the catalogue.
    out_of_stock: HashSet<u32>,
    category: Vec<Option<String>>,
    live: RwLock<Live>,
    exclude_kinds: Vec<EventKind>,
    pop_weight: f32,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn category_of(attrs: &serde_json::Value) -> Option<String> {
    ["category", "masterCategory", "articleType", "product_group_name"]
        .iter()
        .find_map(|k| attrs.get(*k).and_then(|v| v.as_str()).map(|s| s.to_ascii_lowercase()))
}

fn out_of_stock(attrs: &serde_json::Value) -> bool {
    attrs.get("in_stock").and_then(|v| v.as_bool()) == Some(false)
        || attrs.get("stock").and_then(|v| v.as_f64()).is_some_and(|s| s <= 0.0)
}

impl OnlineRanker {
    /// Builds the ranker of `version` from its serving model and the store (catalogue attributes,
    /// features, popularity, every user's exclusions and recent items).
    pub fn build(version: &str, sm: &ServingModel, store: &Store, cfg: &Config) -> Result<Self> {
        let d = sm.dim;
        let mut items = sm.items.clone();
        let mut item_emb = sm.item_emb.clone();
        let mut item_index: HashMap<String, u32> =
            items.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect();
        let n_trained = items.len();
        let layout = sm.graph.as_ref().map(|g| &g.layout).or(sm.projection.as_ref().map(|p| &p.layout));
        let feat = match layout {
            Some(l) => ItemFeatures::load_with_layout(store, l)?,
            None => ItemFeatures::load(store)?,
        };
        let new: Vec<String> = feat.skus.iter().filter(|s| !item_index.contains_key(*s)).cloned().collect();
        let mut n_graph = 0;
        if let (Some(g), false) = (&sm.graph, new.is_empty()) {
            // through the model's item graph; the projection when that cannot be done
            match super::item_graph::extend(sm, g, &feat, &new) {
                Ok(e) => {
                    item_emb = e;
                    n_graph = new.len();
                }
                Err(e) => {
                    tracing::warn!(version, error = %e, "new items not added to the item graph; using the projection")
                }
            }
        }
        for sku in new {
            // through the graph their rows are in item_emb already
            if n_graph == 0 {
                let Some(e) = sm.projection.as_ref().zip(feat.row(&sku)).map(|(p, x)| project(p, x, d)) else {
                    continue;
                };
                item_emb.extend(e);
            }
            item_index.insert(sku.clone(), items.len() as u32);
            items.push(sku);
        }
        let item_feat = items.iter().map(|s| feat.index.get(s).map(|&r| r as u32)).collect();
        let mut category = vec![None; items.len()];
        // Items out of stock, and trained items the catalogue no longer (or never) held, are
        // never served.
        let mut oos: HashSet<u32> = (0..items.len() as u32).collect();
        for it in store.items()? {
            if let Some(&i) = item_index.get(&it.sku) {
                category[i as usize] = category_of(&it.attributes);
                if !out_of_stock(&it.attributes) {
                    oos.remove(&i);
                }
            }
        }
        let exclude_kinds = cfg.serve.exclude_kinds.clone();
        let r = Self {
            version: version.to_string(),
            dim: d,
            user_index: sm.users.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect(),
            user_emb: sm.user_emb.clone(),
            live: RwLock::new(Live { pop: vec![0.0; items.len()], ..Default::default() }),
            items,
            item_index,
            item_emb,
            n_trained,
            n_graph,
            feat,
            item_feat,
            out_of_stock: oos,
            category,
            exclude_kinds,
            pop_weight: cfg.online.cold_popularity_weight as f32,
        };
        r.apply(&store.interactions()?);
        Ok(r)
    }

    /// Items the ranker can return (trained + projected).
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// Items added through the feature projection.
    pub fn n_projected(&self) -> usize {
        self.items.len() - self.n_trained - self.n_graph
    }

    /// Items added through the model's item graph (FREEDOM).
    pub fn n_graph(&self) -> usize {
        self.n_graph
    }

    fn apply(&self, events: &[Event]) {
        let Ok(mut live) = self.live.write() else {
            return;
        };
        for e in events {
            let Some(&i) = self.item_index.get(&e.sku) else {
                continue;
            };
            live.pop[i as usize] += e.kind.weight() as f32;
            if self.exclude_kinds.contains(&e.kind) {
                live.exclusions.entry(e.user.clone()).or_default().insert(i);
            }
            let q = live.recent.entry(e.user.clone()).or_default();
            q.retain(|&x| x != i);
            q.push_front(i);
            q.truncate(RECENT);
        }
        live.pop_max = live.pop.iter().copied().fold(0.0, f32::max);
        let mut nz: Vec<f32> = live.pop.iter().copied().filter(|&p| p > 0.0).collect();
        live.pop_p90 = if nz.is_empty() {
            f32::INFINITY
        } else {
            let at = (nz.len() * 9 / 10).min(nz.len() - 1);
            *nz.select_nth_unstable_by(at, |a, b| a.total_cmp(b)).1
        };
    }

    fn emb(&self, i: u32) -> &[f32] {
        &self.item_emb[i as usize * self.dim..(i as usize + 1) * self.dim]
    }

    fn feat_row(&self, i: u32) -> Option<&[f32]> {
        self.item_feat[i as usize]
            .map(|r| &self.feat.rows[r as usize * self.feat.dim..(r as usize + 1) * self.feat.dim])
    }

    fn cos_emb(&self, a: u32, b: u32) -> f32 {
        let (x, y) = (self.emb(a), self.emb(b));
        let n = (dot(x, x) * dot(y, y)).sqrt();
        if n > 0.0 {
            dot(x, y) / n
        } else {
            0.0
        }
    }

    /// Recommendation with optional filters (the [`Ranker`] entry uses none).
    pub fn recommend_filtered(&self, user: &str, k: usize, ctx: &RequestCtx, filter: &Filter) -> Recommendation {
        let live = match self.live.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let n = self.items.len();
        let empty = HashSet::new();
        let excl = live.exclusions.get(user).unwrap_or(&empty);
        let ctx_ex: HashSet<u32> = ctx.exclude.iter().filter_map(|s| self.item_index.get(s).copied()).collect();
        let want_cat = filter.category.as_ref().map(|c| c.to_ascii_lowercase());
        let allowed = |i: u32| {
            !excl.contains(&i)
                && !ctx_ex.contains(&i)
                && !self.out_of_stock.contains(&i)
                && want_cat.as_ref().is_none_or(|c| self.category[i as usize].as_ref() == Some(c))
        };
        let recent: Vec<u32> = live.recent.get(user).map(|q| q.iter().copied().collect()).unwrap_or_default();
        let known = self.user_index.get(user).copied();
        let mut scored: Vec<(f32, u32)> = Vec::with_capacity(n);
        match known {
            Some(u) => {
                let ue = &self.user_emb[u as usize * self.dim..(u as usize + 1) * self.dim];
                for i in 0..n as u32 {
                    if allowed(i) {
                        scored.push((dot(ue, self.emb(i)), i));
                    }
                }
            }
            None => {
                // Cold start: popularity blended with content similarity to recent items.
                let profile: Option<Vec<f32>> = {
                    let rows: Vec<&[f32]> = recent.iter().filter_map(|&i| self.feat_row(i)).collect();
                    (!rows.is_empty()).then(|| {
                        let mut p = vec![0f32; self.feat.dim];
                        for r in &rows {
                            p.iter_mut().zip(r.iter()).for_each(|(a, b)| *a += b);
                        }
                        let nrm = dot(&p, &p).sqrt().max(1e-12);
                        p.iter_mut().for_each(|x| *x /= nrm);
                        p
                    })
                };
                let w = self.pop_weight;
                let pmax = live.pop_max.max(1e-12);
                for i in 0..n as u32 {
                    if !allowed(i) {
                        continue;
                    }
                    let pop = live.pop[i as usize] / pmax;
                    let sim = match (&profile, self.feat_row(i)) {
                        (Some(p), Some(r)) => dot(p, r).max(0.0),
                        _ => 0.0,
                    };
                    let s = if profile.is_some() { w * pop + (1.0 - w) * sim } else { pop };
                    scored.push((s, i));
                }
            }
        }
        let by_score = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if scored.len() > k && k > 0 {
            scored.select_nth_unstable_by(k - 1, by_score);
            scored.truncate(k);
        }
        scored.sort_unstable_by(by_score);
        scored.truncate(k);
        let items = scored
            .into_iter()
            .map(|(s, i)| RecItem {
                sku: self.items[i as usize].clone(),
                score: s as f64,
                reason: self.reason(i, &recent, &live, known.is_some()),
            })
            .collect();
        Recommendation {
            model_version: self.version.clone(),
            generated_at: ctx.now_ms,
            fallback: known.is_none(),
            items,
        }
    }

    fn reason(&self, i: u32, recent: &[u32], live: &Live, known: bool) -> String {
        if (i as usize) >= self.n_trained {
            return "new_in_catalogue".into();
        }
        let sim = |j: u32| -> f32 {
            if known {
                self.cos_emb(i, j)
            } else {
                match (self.feat_row(i), self.feat_row(j)) {
                    (Some(a), Some(b)) => dot(a, b),
                    _ => self.cos_emb(i, j),
                }
            }
        };
        let best = recent.iter().filter(|&&j| j != i).map(|&j| (sim(j), j)).max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((s, j)) if s > 0.5 => format!("similar_to:{}", self.items[j as usize]),
            _ if live.pop[i as usize] >= live.pop_p90 => "popular_in_store".into(),
            _ => "for_you".into(),
        }
    }
}

impl Ranker for OnlineRanker {
    fn recommend(&self, user: &str, k: usize, ctx: &RequestCtx) -> Recommendation {
        self.recommend_filtered(user, k, ctx, &Filter::default())
    }

    fn model_version(&self) -> String {
        self.version.clone()
    }

    fn observe(&self, events: &[Event]) {
        self.apply(events);
    }
}
