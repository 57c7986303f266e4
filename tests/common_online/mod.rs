//! Test support for the learning loop: a planted-preference store (user groups that buy from
//! their own item group), item features that point at the group, and a small, fast config.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sgbd_edge::config::Config;
use sgbd_edge::store::{Event, EventKind, FeatureKind, NewItem, Store};
use std::path::Path;

#[derive(Clone, Copy)]
pub struct Planted {
    pub groups: usize,
    pub items_per_group: usize,
    pub users_per_group: usize,
    pub per_user: usize,
    pub feature_dim: usize,
}

pub fn sku(g: usize, i: usize) -> String {
    format!("g{g}-i{i}")
}

pub fn user(g: usize, u: usize) -> String {
    format!("g{g}-u{u}")
}

/// A unit feature vector of group `g`: the group's axis plus small noise.
pub fn feature(p: &Planted, g: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..p.feature_dim).map(|_| rng.random_range(-0.15..0.15)).collect();
    v[g % p.feature_dim] += 1.0;
    v
}

/// Catalogue (category attribute = group) and, when `features`, a text feature per item.
pub fn catalog(store: &Store, p: &Planted, features: bool, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for g in 0..p.groups {
        for i in 0..p.items_per_group {
            store
                .upsert_item(&NewItem {
                    sku: sku(g, i),
                    title: format!("item {i} of group {g}"),
                    description: String::new(),
                    attributes: serde_json::json!({"category": format!("g{g}")}),
                    image_path: None,
                })
                .unwrap();
            if features {
                store
                    .set_item_feature(&sku(g, i), FeatureKind::Text, "test-encoder", &feature(p, g, &mut rng))
                    .unwrap();
            }
        }
    }
}

/// `per_user` purchases per user from the user's own group (distinct items), in time order from
/// `t0`; event ids are unique per (tag, user, k).
pub fn events(p: &Planted, seed: u64, t0: i64, tag: &str) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut t = t0;
    for g in 0..p.groups {
        for u in 0..p.users_per_group {
            let mut items: Vec<usize> = (0..p.items_per_group).collect();
            items.shuffle(&mut rng);
            for (k, &i) in items.iter().take(p.per_user).enumerate() {
                t += 1;
                out.push(Event {
                    event_id: format!("{tag}-{g}-{u}-{k}"),
                    user: user(g, u),
                    sku: sku(g, i),
                    kind: EventKind::Purchase,
                    ts_ms: t,
                    kiosk: Some(format!("k{g}")),
                });
            }
        }
    }
    out
}

/// A small, fast configuration rooted at `dir`: MF, 16 dims, SGBD, high learning rate.
pub fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.node.data_dir = dir.join("var");
    c.learn.model = sgbd_edge::learn::model::ModelKind::Mf;
    c.learn.dim = 16;
    c.learn.lr = 0.05;
    c.learn.batch = 64;
    c.learn.reg = 0.0;
    c.learn.seed = 7;
    c.online.epochs = 40;
    c.online.patience = 10;
    c.online.time_budget_s = 15;
    c.online.min_new_events = 1;
    c.online.min_interval_s = 0;
    c.online.poll_s = 1;
    c
}

pub fn open(cfg: &Config) -> Store {
    sgbd_edge::store::open_config(cfg).unwrap()
}
