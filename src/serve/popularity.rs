//! Store popularity: the cold-start fallback (`fallback: true`, model version `popularity`).
//!
//! Items are ranked by the store's weighted interaction count ([`crate::store::Store::popularity`]:
//! view 1, scan 2, cart 4, purchase 8), then the rest of the catalogue (score 0, newest first) so a
//! new store still gets suggestions. A user's items of the configured `serve.exclude_kinds` are
//! never suggested to that user. Scores and exclusions are updated incrementally from ingested
//! events ([`Ranker::observe`]) and re-read from the store periodically by the daemon
//! ([`PopularityRanker::refresh`]), which also corrects any drift (e.g. a duplicate event counted
//! by `observe`).

use super::{Ranker, Recommendation, RequestCtx, ServeError};
use crate::mqtt::contract::RecItem;
use crate::store::{Event, EventKind, Store};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// Model version string of this ranker.
pub const POPULARITY_VERSION: &str = "popularity";

/// Most popular items kept in memory.
const POP_LIMIT: usize = 10_000;

struct Ranked {
    sku: String,
    score: f64,
    popular: bool,
}

/// Popularity in this store, held in memory.
pub struct PopularityRanker {
    ranked: RwLock<Arc<Vec<Ranked>>>,
    exclusions: RwLock<HashMap<String, HashSet<String>>>,
    exclude_kinds: Vec<EventKind>,
}

impl PopularityRanker {
    /// Builds the ranker from the store: popularity, catalogue, and every user's excluded items.
    pub fn load(store: &Store, exclude_kinds: &[EventKind]) -> Result<Self, ServeError> {
        let r = Self {
            ranked: RwLock::new(Arc::new(Vec::new())),
            exclusions: RwLock::new(HashMap::new()),
            exclude_kinds: exclude_kinds.to_vec(),
        };
        r.refresh(store)?;
        let evs = store.interactions()?;
        r.add_exclusions(&evs);
        Ok(r)
    }

    /// Re-reads popularity and the catalogue from the store and swaps the ranking in.
    pub fn refresh(&self, store: &Store) -> Result<(), ServeError> {
        let pop = store.popularity(None, POP_LIMIT)?;
        let mut seen: HashSet<String> = pop.iter().map(|(s, _)| s.clone()).collect();
        let mut ranked: Vec<Ranked> =
            pop.into_iter().map(|(sku, score)| Ranked { sku, score, popular: true }).collect();
        let mut rest: Vec<(i64, String)> =
            store.items()?.into_iter().filter(|i| !seen.contains(&i.sku)).map(|i| (i.created_ms, i.sku)).collect();
        rest.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, sku) in rest {
            if seen.insert(sku.clone()) {
                ranked.push(Ranked { sku, score: 0.0, popular: false });
            }
        }
        if let Ok(mut g) = self.ranked.write() {
            *g = Arc::new(ranked);
        }
        Ok(())
    }

    /// Adds the events' weights to the scores and re-sorts (a stable sort: ties keep their order).
    fn add_scores(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let Ok(mut g) = self.ranked.write() else { return };
        let mut add: HashMap<&str, f64> = HashMap::new();
        for e in events {
            *add.entry(e.sku.as_str()).or_default() += e.kind.weight();
        }
        let mut next: Vec<Ranked> = g
            .iter()
            .map(|r| match add.remove(r.sku.as_str()) {
                Some(w) => Ranked { sku: r.sku.clone(), score: r.score + w, popular: true },
                None => Ranked { sku: r.sku.clone(), score: r.score, popular: r.popular },
            })
            .collect();
        // Only catalogue items are served: an event for a SKU the ranking does not hold (kept
        // apart by the store until the item is catalogued) adds nothing here.
        next.sort_by(|a, b| b.score.total_cmp(&a.score));
        *g = Arc::new(next);
    }

    fn add_exclusions(&self, events: &[Event]) {
        if self.exclude_kinds.is_empty() {
            return;
        }
        if let Ok(mut ex) = self.exclusions.write() {
            for e in events.iter().filter(|e| self.exclude_kinds.contains(&e.kind)) {
                ex.entry(e.user.clone()).or_default().insert(e.sku.clone());
            }
        }
    }

    /// Items ranked right now (for status and tests).
    pub fn len(&self) -> usize {
        self.ranked.read().map(|r| r.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ranker for PopularityRanker {
    fn recommend(&self, user: &str, k: usize, ctx: &RequestCtx) -> Recommendation {
        let ranked = self.ranked.read().map(|r| r.clone()).unwrap_or_default();
        let excl = self.exclusions.read().ok();
        let user_excl = excl.as_ref().and_then(|e| e.get(user));
        let mut items = Vec::with_capacity(k);
        for r in ranked.iter() {
            if items.len() >= k {
                break;
            }
            if user_excl.is_some_and(|s| s.contains(&r.sku)) || ctx.exclude.iter().any(|e| e == &r.sku) {
                continue;
            }
            items.push(RecItem {
                sku: r.sku.clone(),
                score: r.score,
                reason: if r.popular { "popular_in_store".into() } else { "new_in_catalogue".into() },
            });
        }
        Recommendation { model_version: POPULARITY_VERSION.into(), generated_at: ctx.now_ms, fallback: true, items }
    }

    fn model_version(&self) -> String {
        POPULARITY_VERSION.into()
    }

    fn observe(&self, events: &[Event]) {
        self.add_scores(events);
        self.add_exclusions(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewItem;

    fn ev(id: &str, user: &str, sku: &str, kind: EventKind) -> Event {
        Event { event_id: id.into(), user: user.into(), sku: sku.into(), kind, ts_ms: 1, kiosk: None }
    }

    #[test]
    fn ranks_by_popularity_excludes_purchases_and_fills_from_catalogue() {
        let mut s = Store::open_in_memory().unwrap();
        for sku in ["a", "b", "c", "d"] {
            s.upsert_item(&NewItem {
                sku: sku.into(),
                title: sku.into(),
                description: String::new(),
                attributes: serde_json::json!({}),
                image_path: None,
            })
            .unwrap();
        }
        s.insert_events(&[
            ev("1", "u1", "a", EventKind::Purchase),
            ev("2", "u2", "a", EventKind::View),
            ev("3", "u2", "b", EventKind::Cart),
            ev("4", "u3", "b", EventKind::View),
        ])
        .unwrap();
        let r = PopularityRanker::load(&s, &[EventKind::Purchase]).unwrap();
        assert_eq!(r.len(), 4);
        let ctx = RequestCtx { now_ms: 5, ..Default::default() };
        let rec = r.recommend("u9", 3, &ctx);
        let skus: Vec<_> = rec.items.iter().map(|i| i.sku.as_str()).collect();
        assert_eq!(skus[..2], ["a", "b"]); // a: 8+1, b: 4+1
        assert_eq!(rec.items[0].score, 9.0);
        assert_eq!(rec.items[2].reason, "new_in_catalogue");
        assert!(rec.fallback);
        assert_eq!(rec.model_version, "popularity");
        // u1 bought a: never again.
        let rec = r.recommend("u1", 10, &ctx);
        assert!(rec.items.iter().all(|i| i.sku != "a"));
        assert_eq!(rec.items.len(), 3);
        // incremental: u2 buys b now (b: 5 + 8 = 13 > a: 9), and c is viewed once.
        r.observe(&[ev("5", "u2", "b", EventKind::Purchase), ev("6", "u4", "c", EventKind::View)]);
        assert!(r.recommend("u2", 10, &ctx).items.iter().all(|i| i.sku != "b"));
        let rec = r.recommend("u9", 4, &ctx);
        let skus: Vec<_> = rec.items.iter().map(|i| i.sku.as_str()).collect();
        assert_eq!(skus, ["b", "a", "c", "d"]);
        assert_eq!(rec.items[2].reason, "popular_in_store");
        // a refresh from the store agrees once the events are stored.
        s.insert_events(&[ev("5", "u2", "b", EventKind::Purchase), ev("6", "u4", "c", EventKind::View)]).unwrap();
        r.refresh(&s).unwrap();
        let again: Vec<_> = r.recommend("u9", 4, &ctx).items.iter().map(|i| (i.sku.clone(), i.score)).collect();
        assert_eq!(again, rec.items.iter().map(|i| (i.sku.clone(), i.score)).collect::<Vec<_>>());
        // request-level exclusion.
        let ctx2 = RequestCtx { exclude: vec!["b".into()], ..ctx };
        assert!(r.recommend("u9", 10, &ctx2).items.iter().all(|i| i.sku != "b"));
    }
}

#[cfg(test)]
mod concurrency {
    use super::*;
    use crate::store::NewItem;

    /// Observers, refreshes and requests at once: a request always gets min(k, catalogue minus
    /// exclusions) items, whatever interleaving happens.
    #[test]
    fn concurrent_observe_refresh_and_recommend_keep_the_list_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        let mut w = Store::open(&db, 5000).unwrap();
        for i in 0..40 {
            w.upsert_item(&NewItem {
                sku: format!("s{i:02}"),
                title: String::new(),
                description: String::new(),
                attributes: serde_json::json!({}),
                image_path: None,
            })
            .unwrap();
        }
        let r = Arc::new(PopularityRanker::load(&w, &[EventKind::Purchase]).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refresher = {
            let (r, stop) = (r.clone(), stop.clone());
            let s = Store::open(&db, 5000).unwrap();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    r.refresh(&s).unwrap();
                }
            })
        };
        let kinds = EventKind::ALL;
        for n in 0..300usize {
            let e = Event {
                event_id: format!("e{n}"),
                user: format!("u{}", n % 3),
                sku: format!("s{:02}", (n * 7) % 40),
                kind: kinds[n % 4],
                ts_ms: n as i64,
                kiosk: None,
            };
            w.insert_events(std::slice::from_ref(&e)).unwrap();
            r.observe(std::slice::from_ref(&e));
            for u in 0..3 {
                let excluded = w.user_skus(&format!("u{u}"), &[EventKind::Purchase]).unwrap().len();
                let rec = r.recommend(&format!("u{u}"), 10, &RequestCtx::default());
                assert_eq!(rec.items.len(), 10.min(40 - excluded), "after {n} events, user u{u}");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        refresher.join().unwrap();
    }
}
