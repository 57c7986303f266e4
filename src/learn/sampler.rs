//! Uniform negative sampling: for each train pair (u, i+), an item drawn uniformly from the
//! items u has no train interaction with (rejection sampling against the sorted train lists).
//! Batches are shuffled each epoch and sampled in parallel, reproducibly from one seed.

use super::data::UserItems;
use super::{LearnError, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

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
}

impl<'a> NegativeSampler<'a> {
    pub fn new(n_items: usize, train: &'a UserItems) -> Result<Self> {
        if n_items == 0 || n_items > u32::MAX as usize {
            return Err(LearnError::Invalid(format!("bad item count {n_items}")));
        }
        Ok(Self { n_items: n_items as u32, train })
    }

    /// One negative for user `u`; an error if `u` interacted with every item.
    pub fn negative(&self, u: u32, rng: &mut impl Rng) -> Result<u32> {
        let seen = self.train.get(u as usize);
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
        let s = NegativeSampler::new(6, &ui).unwrap();
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
        let s = NegativeSampler::new(2, &ui).unwrap();
        assert!(s.negative(0, &mut StdRng::seed_from_u64(0)).is_err());
    }
}
