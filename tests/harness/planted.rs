//! One synthetic world with planted preferences, and its views for each kind of test.
//!
//! Users and items fall into `groups` groups (ids in blocks: group g holds users
//! `g * users_per_group ..` and items `g * items_per_group ..`). The last `cold_per_group` items of
//! each group are cold: in the catalogue, with features, never interacted with. Each user takes
//! the warm items of its own group in a random order (from `seed`): the first `per_user` are its
//! training interactions (purchases in the store), the next two its valid and test items. In every
//! feature table an item lies near its group's centroid (uniform noise of ±0.15 per coordinate);
//! the centroids are random points in [-1, 1]^dim, centred over the groups (two groups: antipodal).
//!
//! Views: [`World::interactions`] (train / valid / test, the recommender engine's input),
//! [`World::multimodal`] (training pairs, groups, cold items and feature tables), and for the store
//! [`World::catalog`] and [`World::events`] (SKUs [`sku`], users [`user`]).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sgbd_edge::learn::data::Interactions;
use sgbd_edge::learn::npy::Modality;
use sgbd_edge::store::{Event, EventKind, FeatureKind, NewItem, Store};

/// The world: how many of everything, and the seed.
#[derive(Clone, Copy, Debug)]
pub struct World {
    pub groups: usize,
    pub users_per_group: usize,
    pub items_per_group: usize,
    /// The last `cold_per_group` items of each group have no interactions.
    pub cold_per_group: usize,
    /// Training interactions per user: distinct warm items of its own group.
    pub per_user: usize,
    /// Item feature tables: (name, dimension).
    pub features: &'static [(&'static str, usize)],
    pub seed: u64,
}

/// Noise around a group's centroid, per feature coordinate.
const FEATURE_NOISE: f32 = 0.15;
/// Feature values come from their own random stream, apart from the interactions'.
const FEATURE_STREAM: u64 = 0x5eed_f00d;

/// The store SKU of item `i` of group `g`.
pub fn sku(g: usize, i: usize) -> String {
    format!("g{g}-i{i}")
}

/// The store user id of user `u` of group `g`.
pub fn user(g: usize, u: usize) -> String {
    format!("g{g}-u{u}")
}

/// The multimodal view: training pairs, each id's group, the cold items and the feature tables.
pub struct Multimodal {
    pub n_users: usize,
    pub n_items: usize,
    pub train: Vec<(u32, u32)>,
    pub user_group: Vec<usize>,
    pub item_group: Vec<usize>,
    pub cold: Vec<u32>,
    pub modalities: Vec<Modality>,
}

impl World {
    /// `groups` groups of `users_per_group` users and `items_per_group` items, `per_user` training
    /// interactions each; no cold items, no features, seed 0.
    pub const fn new(groups: usize, users_per_group: usize, items_per_group: usize, per_user: usize) -> World {
        World { groups, users_per_group, items_per_group, cold_per_group: 0, per_user, features: &[], seed: 0 }
    }

    pub const fn cold(self, cold_per_group: usize) -> World {
        World { cold_per_group, ..self }
    }

    pub const fn features(self, features: &'static [(&'static str, usize)]) -> World {
        World { features, ..self }
    }

    pub const fn seed(self, seed: u64) -> World {
        World { seed, ..self }
    }

    pub fn n_users(&self) -> usize {
        self.groups * self.users_per_group
    }

    pub fn n_items(&self) -> usize {
        self.groups * self.items_per_group
    }

    fn warm_per_group(&self) -> usize {
        self.items_per_group - self.cold_per_group
    }

    /// For each user (by id), the warm items of its group (indices within the group) in the
    /// user's random order.
    fn orders(&self) -> Vec<Vec<usize>> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        (0..self.n_users())
            .map(|_| {
                let mut items: Vec<usize> = (0..self.warm_per_group()).collect();
                items.shuffle(&mut rng);
                items
            })
            .collect()
    }

    /// Dense item id of item `i` of group `g`.
    fn item_id(&self, g: usize, i: usize) -> u32 {
        (g * self.items_per_group + i) as u32
    }

    /// Each user's `per_user` training items, as (user, item) dense ids.
    fn train_pairs(&self, orders: &[Vec<usize>]) -> Vec<(u32, u32)> {
        assert!(self.per_user <= self.warm_per_group(), "{self:?}: more interactions than warm items");
        let mut train = Vec::new();
        for (u, order) in orders.iter().enumerate() {
            let g = u / self.users_per_group;
            train.extend(order[..self.per_user].iter().map(|&i| (u as u32, self.item_id(g, i))));
        }
        train
    }

    /// Train / valid / test: `per_user` training items per user, then one valid and one test item.
    pub fn interactions(&self) -> Interactions {
        assert!(self.per_user + 2 <= self.warm_per_group(), "{self:?}: no warm items left to hold out");
        let orders = self.orders();
        let mut d = Interactions {
            n_users: self.n_users(),
            n_items: self.n_items(),
            train: self.train_pairs(&orders),
            ..Default::default()
        };
        for (u, order) in orders.iter().enumerate() {
            let g = u / self.users_per_group;
            d.valid.push((u as u32, self.item_id(g, order[self.per_user])));
            d.test.push((u as u32, self.item_id(g, order[self.per_user + 1])));
        }
        d
    }

    /// Each feature table's group centroids, `[table][group]`: random points in [-1, 1]^dim,
    /// centred (their mean over the groups is subtracted; two groups are antipodal).
    fn centroids(&self, rng: &mut StdRng) -> Vec<Vec<Vec<f32>>> {
        self.features
            .iter()
            .map(|&(_, dim)| {
                let points: Vec<Vec<f32>> =
                    (0..self.groups).map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
                let mean: Vec<f32> =
                    (0..dim).map(|k| points.iter().map(|p| p[k]).sum::<f32>() / self.groups as f32).collect();
                points.iter().map(|p| p.iter().zip(&mean).map(|(x, m)| x - m).collect()).collect()
            })
            .collect()
    }

    fn near(centroid: &[f32], rng: &mut StdRng) -> Vec<f32> {
        centroid.iter().map(|c| c + rng.random_range(-FEATURE_NOISE..FEATURE_NOISE)).collect()
    }

    /// Every item's features, table by table: `[table][item]`.
    fn feature_tables(&self) -> Vec<Vec<Vec<f32>>> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ FEATURE_STREAM);
        let centroids = self.centroids(&mut rng);
        centroids
            .iter()
            .map(|table| (0..self.n_items()).map(|i| Self::near(&table[i / self.items_per_group], &mut rng)).collect())
            .collect()
    }

    /// Another item of group `g` in the first feature table, its noise drawn from `rng` (for an
    /// item a test adds to the catalogue).
    pub fn feature(&self, g: usize, rng: &mut StdRng) -> Vec<f32> {
        let centroids = self.centroids(&mut StdRng::seed_from_u64(self.seed ^ FEATURE_STREAM));
        Self::near(&centroids[0][g], rng)
    }

    /// Training pairs only (no holdout), with groups, cold items and one modality per feature table.
    pub fn multimodal(&self) -> Multimodal {
        let n_items = self.n_items();
        let cold = (0..self.groups)
            .flat_map(|g| (self.warm_per_group()..self.items_per_group).map(move |i| (g, i)))
            .map(|(g, i)| self.item_id(g, i))
            .collect();
        let modalities = self
            .features
            .iter()
            .zip(self.feature_tables())
            .map(|(&(name, dim), rows)| Modality::new(name, n_items, dim, rows.concat()).unwrap())
            .collect();
        Multimodal {
            n_users: self.n_users(),
            n_items,
            train: self.train_pairs(&self.orders()),
            user_group: (0..self.n_users()).map(|u| u / self.users_per_group).collect(),
            item_group: (0..n_items).map(|i| i / self.items_per_group).collect(),
            cold,
            modalities,
        }
    }

    /// The catalogue in `store` (category attribute = group) and, when `features`, a text feature
    /// per item from the first feature table.
    pub fn catalog(&self, store: &Store, features: bool) {
        let tables = self.feature_tables();
        for g in 0..self.groups {
            for i in 0..self.items_per_group {
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
                    let v = &tables[0][self.item_id(g, i) as usize];
                    store.set_item_feature(&sku(g, i), FeatureKind::Text, "test-encoder", v).unwrap();
                }
            }
        }
    }

    /// The training interactions as purchases, user after user in time order from `t0`, at kiosk
    /// `k<group>`; event ids are unique per (tag, group, user, k).
    pub fn events(&self, t0: i64, tag: &str) -> Vec<Event> {
        let train = self.train_pairs(&self.orders());
        let mut t = t0;
        train
            .iter()
            .enumerate()
            .map(|(n, &(u, i))| {
                let (u, i) = (u as usize, i as usize);
                let (g, k) = (u / self.users_per_group, n % self.per_user);
                t += 1;
                Event {
                    event_id: format!("{tag}-{g}-{}-{k}", u % self.users_per_group),
                    user: user(g, u % self.users_per_group),
                    sku: sku(g, i % self.items_per_group),
                    kind: EventKind::Purchase,
                    ts_ms: t,
                    kiosk: Some(format!("k{g}")),
                }
            })
            .collect()
    }
}
