//! Deliberate item-feature corruption for robustness runs (seeded, reproducible):
//! - Gaussian noise: x += sigma * std_c * N(0, 1), with std_c the standard deviation of column c
//!   over all items, so sigma is relative to each feature's own spread;
//! - swaps: a fraction p of the items (chosen without replacement) get the features of another
//!   uniformly drawn item (a mismatched photo or description).

use super::{LearnError, Result};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// How to corrupt a feature matrix.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Corruption {
    /// Noise level relative to each column's standard deviation (0 = none).
    pub noise_sigma: f32,
    /// Fraction of items given another random item's features (0 = none).
    pub swap_frac: f32,
    pub seed: u64,
}

impl Default for Corruption {
    fn default() -> Self {
        Self { noise_sigma: 0.0, swap_frac: 0.0, seed: 0 }
    }
}

impl Corruption {
    pub fn validate(&self) -> Result<()> {
        if !(self.noise_sigma >= 0.0 && self.noise_sigma.is_finite()) {
            return Err(LearnError::Invalid(format!("noise sigma must be >= 0, got {}", self.noise_sigma)));
        }
        if !(0.0..=1.0).contains(&self.swap_frac) {
            return Err(LearnError::Invalid(format!("swap fraction must be in [0, 1], got {}", self.swap_frac)));
        }
        Ok(())
    }

    pub fn is_none(&self) -> bool {
        self.noise_sigma == 0.0 && self.swap_frac == 0.0
    }

    /// Corrupts a row-major [n, d] matrix in place: swaps first, then noise. Returns the swapped
    /// items. `salt` separates the random streams of several modalities under one seed.
    pub fn apply(&self, n: usize, d: usize, feats: &mut [f32], salt: u64) -> Result<Vec<u32>> {
        self.validate()?;
        let swapped = swap_items(n, d, feats, self.swap_frac, self.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))?;
        add_noise(n, d, feats, self.noise_sigma, self.seed ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 1)?;
        if !self.is_none() {
            tracing::info!(
                items = n,
                sigma = self.noise_sigma,
                swap = self.swap_frac,
                swapped = swapped.len(),
                "corrupted item features"
            );
        }
        Ok(swapped)
    }
}

fn check(n: usize, d: usize, feats: &[f32]) -> Result<()> {
    if feats.len() != n * d {
        return Err(LearnError::Invalid(format!("{} feature values for a {n} x {d} matrix", feats.len())));
    }
    Ok(())
}

/// Per-column standard deviation (population) of a row-major [n, d] matrix.
pub fn column_std(n: usize, d: usize, feats: &[f32]) -> Vec<f32> {
    let mut mean = vec![0f64; d];
    let mut sq = vec![0f64; d];
    for row in feats.chunks_exact(d.max(1)).take(n) {
        for ((m, s), &x) in mean.iter_mut().zip(sq.iter_mut()).zip(row) {
            *m += x as f64;
            *s += (x as f64) * (x as f64);
        }
    }
    let nf = n.max(1) as f64;
    mean.iter().zip(&sq).map(|(m, s)| ((s / nf - (m / nf).powi(2)).max(0.0)).sqrt() as f32).collect()
}

/// Adds N(0, (sigma * std_c)^2) noise to every entry of column c.
pub fn add_noise(n: usize, d: usize, feats: &mut [f32], sigma: f32, seed: u64) -> Result<()> {
    check(n, d, feats)?;
    if sigma == 0.0 || n == 0 || d == 0 {
        return Ok(());
    }
    let std = column_std(n, d, feats);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for row in feats.chunks_exact_mut(d) {
        for (x, s) in row.iter_mut().zip(&std) {
            let z: f32 = StandardNormal.sample(&mut rng);
            *x += sigma * s * z;
        }
    }
    Ok(())
}

/// Gives round(p * n) items, drawn without replacement, the (original) features of another
/// uniformly drawn item. Returns the affected items, sorted.
pub fn swap_items(n: usize, d: usize, feats: &mut [f32], p: f32, seed: u64) -> Result<Vec<u32>> {
    check(n, d, feats)?;
    let count = ((p as f64) * n as f64).round() as usize;
    if count == 0 || n < 2 {
        return Ok(vec![]);
    }
    let original = feats.to_vec();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut chosen: Vec<u32> = sample(&mut rng, n, count.min(n)).into_iter().map(|i| i as u32).collect();
    chosen.sort_unstable();
    for &i in &chosen {
        let i = i as usize;
        // A donor different from i.
        let mut j = rng.random_range(0..n - 1);
        if j >= i {
            j += 1;
        }
        feats[i * d..(i + 1) * d].copy_from_slice(&original[j * d..(j + 1) * d]);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(n: usize, d: usize) -> Vec<f32> {
        (0..n * d).map(|i| ((i * 7919 % 1000) as f32) / 100.0 + (i % d) as f32 * 3.0).collect()
    }

    #[test]
    fn noise_has_the_requested_relative_level() {
        let (n, d) = (4000, 3);
        let orig = feats(n, d);
        let std = column_std(n, d, &orig);
        let mut x = orig.clone();
        add_noise(n, d, &mut x, 0.5, 7).unwrap();
        let diff: Vec<f32> = x.iter().zip(&orig).map(|(a, b)| a - b).collect();
        let dstd = column_std(n, d, &diff);
        for c in 0..d {
            let want = 0.5 * std[c];
            assert!((dstd[c] - want).abs() < 0.05 * want, "column {c}: {} vs {want}", dstd[c]);
        }
        // Seeded: the same seed gives the same noise, another seed another.
        let mut y = orig.clone();
        add_noise(n, d, &mut y, 0.5, 7).unwrap();
        assert_eq!(x, y);
        let mut z = orig.clone();
        add_noise(n, d, &mut z, 0.5, 8).unwrap();
        assert_ne!(x, z);
        let mut w = orig.clone();
        add_noise(n, d, &mut w, 0.0, 7).unwrap();
        assert_eq!(w, orig);
    }

    #[test]
    fn swaps_exact_fraction_with_other_items_features() {
        let (n, d) = (200, 4);
        let orig = feats(n, d);
        let mut x = orig.clone();
        let swapped = swap_items(n, d, &mut x, 0.25, 3).unwrap();
        assert_eq!(swapped.len(), 50);
        let mut uniq = swapped.clone();
        uniq.dedup();
        assert_eq!(uniq.len(), 50);
        for i in 0..n {
            let row = &x[i * d..(i + 1) * d];
            if swapped.contains(&(i as u32)) {
                let donor = (0..n).find(|&j| &orig[j * d..(j + 1) * d] == row).unwrap();
                assert_ne!(donor, i);
            } else {
                assert_eq!(row, &orig[i * d..(i + 1) * d]);
            }
        }
        let mut y = orig.clone();
        assert_eq!(swap_items(n, d, &mut y, 0.25, 3).unwrap(), swapped);
        assert_eq!(x, y);
    }

    #[test]
    fn validates_parameters() {
        let mut x = feats(10, 2);
        let bad = [
            Corruption { noise_sigma: -1.0, ..Default::default() },
            Corruption { swap_frac: 1.5, ..Default::default() },
            Corruption { noise_sigma: f32::NAN, ..Default::default() },
        ];
        for c in bad {
            assert!(c.apply(10, 2, &mut x, 0).is_err());
        }
        assert!(Corruption::default().apply(10, 3, &mut x, 0).is_err());
        let before = x.clone();
        assert!(Corruption::default().apply(10, 2, &mut x, 0).unwrap().is_empty());
        assert_eq!(x, before);
    }
}
