//! Full-ranking evaluation (MMRec protocol): every item is scored for every user that has target
//! items, the user's `mask` items (train) are excluded, and Recall@K = hits / |targets|,
//! NDCG@K with binary gains and ideal DCG over min(K, |targets|), Precision@K = hits / K,
//! averaged over users with targets.
//!
//! Memory stays bounded: scores are computed for `block` users at a time (one matmul), then each
//! row is masked and reduced to its top K in parallel (no sort of the whole row).

use super::data::UserItems;
use super::{LearnError, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// Averages at each K in `ks`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RankMetrics {
    pub ks: Vec<usize>,
    pub recall: Vec<f64>,
    pub ndcg: Vec<f64>,
    pub precision: Vec<f64>,
    /// Users with at least one target item (the denominator).
    pub n_users: usize,
}

impl RankMetrics {
    fn pos(&self, k: usize) -> Option<usize> {
        self.ks.iter().position(|&x| x == k)
    }
    pub fn recall_at(&self, k: usize) -> f64 {
        self.pos(k).map_or(f64::NAN, |i| self.recall[i])
    }
    pub fn ndcg_at(&self, k: usize) -> f64 {
        self.pos(k).map_or(f64::NAN, |i| self.ndcg[i])
    }
    pub fn precision_at(&self, k: usize) -> f64 {
        self.pos(k).map_or(f64::NAN, |i| self.precision[i])
    }
}

/// Indices of the `k` highest scores, best first (ties: lower index first; NaN never selected
/// over a number). Items in `masked` (sorted) are skipped.
pub fn top_k(scores: &[f32], masked: &[u32], k: usize) -> Vec<u32> {
    if k == 0 {
        return vec![];
    }
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    let push = |best: &mut Vec<(f32, u32)>, s: f32, j: usize| {
        let s = if s.is_nan() { f32::NEG_INFINITY } else { s };
        if best.len() == k {
            // strict: an equal score does not displace a lower index
            if s <= best[k - 1].0 {
                return;
            }
            best.pop();
        }
        let at = best.partition_point(|&(b, _)| b >= s);
        best.insert(at, (s, j as u32));
    };
    // the unmasked segments [start, end) between masked items
    let mut start = 0usize;
    let n = scores.len();
    for end in masked.iter().map(|&m| (m as usize).min(n)).chain(std::iter::once(n)) {
        if end > start {
            let seg = &scores[start..end];
            let mut j = start;
            for chunk in seg.chunks(16) {
                if best.len() == k {
                    let t = best[k - 1].0;
                    // branch-free test of the whole chunk (vectorises)
                    if chunk.iter().map(|&v| (v > t) as u32).sum::<u32>() == 0 {
                        j += chunk.len();
                        continue;
                    }
                }
                for &v in chunk {
                    push(&mut best, v, j);
                    j += 1;
                }
            }
        }
        start = start.max(end + 1);
    }
    best.into_iter().map(|(_, j)| j).collect()
}

/// Per-user (recall, ndcg, precision) at each k for a ranked list.
fn user_metrics(ranked: &[u32], targets: &[u32], ks: &[usize], out: &mut [f64]) {
    let nk = ks.len();
    let mut hits = 0usize;
    let mut dcg = 0f64;
    let mut ki = 0;
    let mut ks_sorted: Vec<(usize, usize)> = ks.iter().copied().enumerate().map(|(i, k)| (k, i)).collect();
    ks_sorted.sort();
    let total_len = ks_sorted.last().map_or(0, |x| x.0);
    for r in 0..=total_len {
        while ki < ks_sorted.len() && ks_sorted[ki].0 == r {
            let (k, i) = ks_sorted[ki];
            let ideal: f64 = (0..k.min(targets.len())).map(|q| 1.0 / ((q + 2) as f64).log2()).sum();
            out[i] += hits as f64 / targets.len() as f64;
            out[nk + i] += if ideal > 0.0 { dcg / ideal } else { 0.0 };
            out[2 * nk + i] += if k > 0 { hits as f64 / k as f64 } else { 0.0 };
            ki += 1;
        }
        if r < ranked.len() && targets.binary_search(&ranked[r]).is_ok() {
            hits += 1;
            dcg += 1.0 / ((r + 2) as f64).log2();
        }
    }
}

/// Scores users `[U, d]` against items `[I, d]`; see the module doc. `mask` and `target` are
/// per-user sorted item lists; users with no target are skipped.
pub fn evaluate(
    users: &Tensor,
    items: &Tensor,
    mask: &UserItems,
    target: &UserItems,
    ks: &[usize],
    block: usize,
) -> Result<RankMetrics> {
    let (n_users, d) = users.dims2()?;
    let (n_items, d2) = items.dims2()?;
    if d != d2 {
        return Err(LearnError::Invalid(format!("user dim {d} != item dim {d2}")));
    }
    if ks.is_empty() || ks.contains(&0) {
        return Err(LearnError::Invalid("ks must be non-empty and positive".into()));
    }
    let kmax = *ks.iter().max().unwrap_or(&1);
    let users = users.to_dtype(DType::F32)?;
    let items_t = items.to_dtype(DType::F32)?.t()?.contiguous()?;
    let eval_users: Vec<u32> =
        (0..n_users.min(target.n_users())).filter(|&u| !target.get(u).is_empty()).map(|u| u as u32).collect();
    let nk = ks.len();
    let mut sums = vec![0f64; 3 * nk];
    for chunk in eval_users.chunks(block.max(1)) {
        let idx = Tensor::from_slice(chunk, chunk.len(), users.device())?;
        // scored on the embeddings' device, ranked on the CPU (a no-op copy there)
        let scores = users.index_select(&idx, 0)?.matmul(&items_t)?.to_device(&candle_core::Device::Cpu)?;
        let (storage, layout) = scores.storage_and_layout();
        let scores: &[f32] = match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((s, e))) => &v[s..e],
            _ => return Err(LearnError::Invalid("evaluation runs on CPU f32 scores".into())),
        };
        let part = scores
            .par_chunks(n_items.max(1))
            .zip(chunk.par_iter())
            .fold(
                || vec![0f64; 3 * nk],
                |mut acc, (row, &u)| {
                    let ranked = top_k(row, mask.get(u as usize), kmax);
                    user_metrics(&ranked, target.get(u as usize), ks, &mut acc);
                    acc
                },
            )
            .reduce(
                || vec![0f64; 3 * nk],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        sums.iter_mut().zip(&part).for_each(|(x, y)| *x += y);
    }
    let n = eval_users.len().max(1) as f64;
    Ok(RankMetrics {
        ks: ks.to_vec(),
        recall: sums[..nk].iter().map(|s| s / n).collect(),
        ndcg: sums[nk..2 * nk].iter().map(|s| s / n).collect(),
        precision: sums[2 * nk..].iter().map(|s| s / n).collect(),
        n_users: eval_users.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_skips_masked_and_orders() {
        let s = [0.1, 0.9, 0.5, 0.9, f32::NAN, 0.7];
        assert_eq!(top_k(&s, &[], 3), vec![1, 3, 5]);
        assert_eq!(top_k(&s, &[1, 5], 3), vec![3, 2, 0]);
        assert_eq!(top_k(&s, &[], 10).len(), 6);
    }
}
