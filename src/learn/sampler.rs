//! Uniform negative sampling: for each train pair (u, i+), an item drawn uniformly from a pool,
//! rejected while u has a train interaction with it (rejection sampling against the sorted train
//! lists). The pool is chosen by [`Negatives`]: by default MMRec's rule, the items that occur in
//! train (`utils/dataloader.py`, `TrainDataLoader.all_items`); `all` draws from every item id.
//! Batches are shuffled each epoch and sampled in parallel, reproducibly from one seed.

use super::data::UserItems;
use super::{LearnError, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Which items a negative is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Negatives {
    /// MMRec's rule: only items that occur in train (an item seen only in valid/test is never a
    /// negative, so training never pushes it down).
    #[default]
    Train,
    /// Every item id `0..n_items` (this project's rule before issue 13).
    All,
}

/// Host-side indices of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchIdx {
    pub users: Vec<u32>,
    pub pos: Vec<u32>,
    pub neg: Vec<u32>,
}

pub struct NegativeSampler<'a> {
    n_items: u32,
    train: &'a UserItems,
    /// Sorted items that occur in train ([`Negatives::Train`]); `None` = every item.
    pool: Option<Vec<u32>>,
}

impl<'a> NegativeSampler<'a> {
    pub fn new(n_items: usize, train: &'a UserItems, rule: Negatives) -> Result<Self> {
        if n_items == 0 || n_items > u32::MAX as usize {
            return Err(LearnError::Invalid(format!("bad item count {n_items}")));
        }
        let pool = match rule {
            Negatives::All => None,
            Negatives::Train => {
                let mut seen = vec![false; n_items];
                for u in 0..train.n_users() {
                    for &i in train.get(u) {
                        if let Some(s) = seen.get_mut(i as usize) {
                            *s = true;
                        }
                    }
                }
                let pool: Vec<u32> = (0..n_items as u32).filter(|&i| seen[i as usize]).collect();
                // no train items at all: nothing to restrict to (training refuses empty data anyway)
                (!pool.is_empty()).then_some(pool)
            }
        };
        Ok(Self { n_items: n_items as u32, train, pool })
    }

    /// Number of items negatives are drawn from.
    pub fn pool_len(&self) -> usize {
        self.pool.as_ref().map_or(self.n_items as usize, Vec::len)
    }

    /// One negative for user `u`; an error if `u` interacted with every item. A user who has
    /// every train item (possible on a tiny store; MMRec would loop forever) gets a negative
    /// from all items instead.
    pub fn negative(&self, u: u32, rng: &mut impl Rng) -> Result<u32> {
        let seen = self.train.get(u as usize);
        if let Some(pool) = &self.pool {
            // the user's train items are all in the pool, so this is "has every pool item"
            if seen.len() < pool.len() {
                loop {
                    let j = pool[rng.random_range(0..pool.len())];
                    if seen.binary_search(&j).is_err() {
                        return Ok(j);
                    }
                }
            }
        }
        if seen.len() >= self.n_items as usize {
            return Err(LearnError::Invalid(format!("user {u} has interacted with every item: no negative exists")));
        }
        loop {
            let j = rng.random_range(0..self.n_items);
            if seen.binary_search(&j).is_err() {
                return Ok(j);
            }
        }
    }

    /// Shuffles `pairs`, cuts them into batches of `batch` (the last one may be smaller) and
    /// draws one negative per pair.
    pub fn epoch(&self, pairs: &[(u32, u32)], batch: usize, rng: &mut StdRng) -> Result<Vec<BatchIdx>> {
        let batch = batch.max(1);
        let mut order: Vec<u32> = (0..pairs.len() as u32).collect();
        order.shuffle(rng);
        let seeds: Vec<u64> = (0..order.len().div_ceil(batch)).map(|_| rng.random()).collect();
        order
            .par_chunks(batch)
            .zip(seeds.par_iter())
            .map(|(chunk, &seed)| {
                let mut r = StdRng::seed_from_u64(seed);
                let mut b = BatchIdx {
                    users: Vec::with_capacity(chunk.len()),
                    pos: Vec::with_capacity(chunk.len()),
                    neg: Vec::with_capacity(chunk.len()),
                };
                for &k in chunk {
                    let (u, i) = pairs[k as usize];
                    b.users.push(u);
                    b.pos.push(i);
                    b.neg.push(self.negative(u, &mut r)?);
                }
                Ok(b)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_samples_a_train_positive_and_covers_the_rest() {
        let pairs = vec![(0, 0), (0, 2), (0, 4), (1, 1)];
        let ui = UserItems::from_pairs(2, &pairs);
        let s = NegativeSampler::new(6, &ui, Negatives::All).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen0 = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let j = s.negative(0, &mut rng).unwrap();
            assert!(![0, 2, 4].contains(&j));
            seen0.insert(j);
        }
        assert_eq!(seen0.into_iter().collect::<Vec<_>>(), vec![1, 3, 5]);
        let batches = s.epoch(&pairs, 3, &mut rng).unwrap();
        assert_eq!(batches.iter().map(|b| b.users.len()).collect::<Vec<_>>(), vec![3, 1]);
        let mut all: Vec<(u32, u32)> =
            batches.iter().flat_map(|b| b.users.iter().copied().zip(b.pos.iter().copied())).collect();
        all.sort();
        assert_eq!(all, pairs);
        for b in &batches {
            for (&u, &n) in b.users.iter().zip(&b.neg) {
                assert!(!ui.contains(u as usize, n));
            }
        }
    }

    #[test]
    fn saturated_user_is_an_error_not_a_hang() {
        let ui = UserItems::from_pairs(1, &[(0, 0), (0, 1)]);
        let s = NegativeSampler::new(2, &ui, Negatives::All).unwrap();
        assert!(s.negative(0, &mut StdRng::seed_from_u64(0)).is_err());
    }

    #[test]
    fn default_rule_never_draws_an_item_absent_from_train_and_all_can() {
        // items 3 and 5 occur only outside train (valid/test): 6 items, train uses 0, 1, 2, 4
        let pairs = vec![(0, 0), (0, 2), (1, 1), (1, 4), (2, 0)];
        let ui = UserItems::from_pairs(3, &pairs);
        assert_eq!(Negatives::default(), Negatives::Train);
        let s = NegativeSampler::new(6, &ui, Negatives::default()).unwrap();
        assert_eq!(s.pool_len(), 4);
        let mut rng = StdRng::seed_from_u64(3);
        let mut drawn = std::collections::BTreeSet::new();
        for _ in 0..50 {
            for b in s.epoch(&pairs, 2, &mut rng).unwrap() {
                for (&u, &n) in b.users.iter().zip(&b.neg) {
                    assert!(n != 3 && n != 5, "item {n} is absent from train");
                    assert!(!ui.contains(u as usize, n));
                    drawn.insert(n);
                }
            }
        }
        assert_eq!(drawn.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 4]);

        let all = NegativeSampler::new(6, &ui, Negatives::All).unwrap();
        assert_eq!(all.pool_len(), 6);
        let mut drawn = std::collections::BTreeSet::new();
        for _ in 0..500 {
            drawn.insert(all.negative(0, &mut rng).unwrap());
        }
        assert!(drawn.contains(&3) && drawn.contains(&5), "{drawn:?}");
    }

    #[test]
    fn user_with_every_train_item_falls_back_to_all_items() {
        // user 0 has both train items; item 2 occurs only in valid/test
        let ui = UserItems::from_pairs(2, &[(0, 0), (0, 1), (1, 0)]);
        let s = NegativeSampler::new(3, &ui, Negatives::Train).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(s.negative(0, &mut rng).unwrap(), 2);
        assert_eq!(s.negative(1, &mut rng).unwrap(), 1);
    }
}
