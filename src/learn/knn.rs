//! FREEDOM's frozen item-item graph: per modality, the cosine k-nearest-neighbour graph of the raw
//! item features, binary, normalised D^-1/2 S D^-1/2, then a weighted sum over modalities
//! (MMRec: S = 0.1 S_image + 0.9 S_text).
//!
//! Built in row blocks: each block of normalised rows is multiplied by all normalised rows
//! (one [block, n] similarity slab at a time, never n x n) and each row keeps a partial top-k
//! (`select_nth_unstable_by`), rows in parallel with rayon.
//!
//! As in MMRec's `get_knn_adj_mat`, a row's k neighbours include the item itself (its cosine with
//! itself is 1) and the graph is directed (row i holds i's k neighbours), so with D the row sums
//! every value is 1/k. `symmetrize = true` instead uses S = max(S, S^T) with D its degrees.

use super::sparse::Csr;
use super::{LearnError, Result};
use rayon::prelude::*;

/// Options of the item-item graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnParams {
    /// Neighbours per item (self included, as in MMRec).
    pub k: usize,
    /// Make the binary kNN graph symmetric before normalising (MMRec does not).
    pub symmetrize: bool,
    /// Rows per similarity block (memory is block x n floats).
    pub block_rows: usize,
}

impl Default for KnnParams {
    fn default() -> Self {
        Self { k: 10, symmetrize: false, block_rows: 512 }
    }
}

/// L2-normalises each row of a row-major [n, d] matrix (all-zero rows stay zero).
fn normalize_rows(n: usize, d: usize, feats: &[f32]) -> Vec<f32> {
    let mut out = feats.to_vec();
    out.par_chunks_mut(d.max(1)).take(n).for_each(|row| {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            row.iter_mut().for_each(|x| *x /= norm);
        } else {
            row.iter_mut().for_each(|x| *x = 0.0);
        }
    });
    out
}

/// For each of the n rows of a row-major [n, d] feature matrix, the indices of its `k` most
/// cosine-similar rows (itself included), sorted by decreasing similarity, ties by lower index.
pub fn knn_indices(n: usize, d: usize, feats: &[f32], k: usize, block_rows: usize) -> Result<Vec<Vec<u32>>> {
    if feats.len() != n * d {
        return Err(LearnError::Invalid(format!("knn: {} values for a {n} x {d} matrix", feats.len())));
    }
    if feats.iter().any(|x| !x.is_finite()) {
        return Err(LearnError::Invalid("knn: features contain NaN or infinity".into()));
    }
    if n == 0 {
        return Ok(vec![]);
    }
    let k = k.min(n);
    let normed = normalize_rows(n, d, feats);
    let all = candle_core::Tensor::from_slice(&normed, (n, d), &candle_core::Device::Cpu)?;
    let all_t = all.t()?.contiguous()?;
    let block = block_rows.max(1);
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(block) {
        let rows = block.min(n - start);
        let sims = all.narrow(0, start, rows)?.matmul(&all_t)?; // [rows, n]
        let part: Vec<Vec<u32>> =
            super::sparse::with_cpu_slice(&sims, |s: &[f32]| s.par_chunks(n).map(|row| top_k(row, k)).collect())?;
        out.extend(part);
    }
    Ok(out)
}

/// Indices of the k largest values of `row`, by decreasing value then increasing index, in one
/// pass keeping the best k so far (sorted) and the value a newcomer must beat.
fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    use std::cmp::Ordering::Greater;
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (j, &s) in row.iter().enumerate() {
        if best.len() == k && best.last().is_none_or(|w| s.total_cmp(&w.0) != Greater) {
            continue;
        }
        // after every kept value >= s (an equal value came first: lower index wins)
        let at = best.partition_point(|b| b.0.total_cmp(&s) != std::cmp::Ordering::Less);
        best.insert(at, (s, j as u32));
        best.truncate(k);
    }
    best.into_iter().map(|(_, j)| j).collect()
}

/// The binary kNN graph of one modality, normalised D^-1/2 S D^-1/2, as an n x n CSR.
pub fn knn_graph(n: usize, d: usize, feats: &[f32], p: &KnnParams) -> Result<Csr> {
    let nbrs = knn_indices(n, d, feats, p.k, p.block_rows)?;
    let mut rows: Vec<Vec<u32>> = nbrs;
    if p.symmetrize {
        let mut sym: Vec<Vec<u32>> = rows.clone();
        for (i, r) in rows.iter().enumerate() {
            for &j in r {
                sym[j as usize].push(i as u32);
            }
        }
        rows = sym;
    }
    for r in rows.iter_mut() {
        r.sort_unstable();
        r.dedup();
    }
    let deg: Vec<f32> = rows.iter().map(|r| r.len() as f32 + 1e-7).collect();
    let inv: Vec<f32> = deg.iter().map(|x| x.powf(-0.5)).collect();
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0usize);
    let mut indices = Vec::new();
    let mut values = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        for &j in r {
            indices.push(j);
            values.push(inv[i] * inv[j as usize]);
        }
        indptr.push(indices.len());
    }
    Ok(Csr { n_rows: n, n_cols: n, indptr, indices, values })
}

/// Weighted sum of same-shape CSR matrices (entries with the same (row, col) are added).
pub fn weighted_sum(mats: &[(f32, &Csr)]) -> Result<Csr> {
    let Some((_, first)) = mats.first() else {
        return Err(LearnError::Invalid("weighted_sum of no matrices".into()));
    };
    let (nr, nc) = (first.n_rows, first.n_cols);
    if mats.iter().any(|(_, m)| m.n_rows != nr || m.n_cols != nc) {
        return Err(LearnError::Invalid("weighted_sum: matrices differ in shape".into()));
    }
    let mut coo = Vec::with_capacity(mats.iter().map(|(_, m)| m.values.len()).sum());
    for (w, m) in mats {
        for r in 0..nr {
            for k in m.indptr[r]..m.indptr[r + 1] {
                coo.push((r as u32, m.indices[k], w * m.values[k]));
            }
        }
    }
    Ok(Csr::from_coo(nr, nc, &coo))
}

/// FREEDOM's multimodal item graph: per modality kNN graphs combined with `weights`
/// (one per modality; MMRec uses 0.1 for the image and 0.9 for the text modality).
/// `modalities` are row-major [n_items, d_m] matrices given as (d_m, data).
pub fn item_graph(n_items: usize, modalities: &[(usize, &[f32])], weights: &[f32], p: &KnnParams) -> Result<Csr> {
    if modalities.is_empty() {
        return Err(LearnError::Invalid("item graph needs at least one modality".into()));
    }
    if weights.len() != modalities.len() {
        return Err(LearnError::Invalid(format!(
            "{} modality weights for {} modalities",
            weights.len(),
            modalities.len()
        )));
    }
    let t0 = std::time::Instant::now();
    let graphs = modalities.iter().map(|(d, data)| knn_graph(n_items, *d, data, p)).collect::<Result<Vec<_>>>()?;
    let pairs: Vec<(f32, &Csr)> = weights.iter().copied().zip(graphs.iter()).collect();
    let g = weighted_sum(&pairs)?;
    tracing::info!(
        items = n_items,
        modalities = modalities.len(),
        k = p.k,
        nnz = g.indices.len(),
        ms = t0.elapsed().as_millis() as u64,
        "built item-item kNN graph"
    );
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9, -1.0], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[0.3, 0.2], 5), vec![0, 1]);
        assert_eq!(top_k(&[0.5, 0.5, 0.5, 0.7], 2), vec![3, 0]);
        assert!(top_k(&[0.5], 0).is_empty());
    }

    /// The one-pass selection gives what a full sort by (value desc, index asc) gives.
    #[test]
    fn top_k_matches_a_full_sort() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for n in [1usize, 7, 100, 1000] {
            // few distinct values: many ties
            let row: Vec<f32> = (0..n).map(|_| rng.random_range(0..20) as f32 / 10.0 - 1.0).collect();
            let mut sorted: Vec<(f32, u32)> = row.iter().enumerate().map(|(j, &s)| (s, j as u32)).collect();
            sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for k in [1usize, 3, 10, n + 2] {
                let want: Vec<u32> = sorted.iter().take(k).map(|e| e.1).collect();
                assert_eq!(top_k(&row, k), want, "n {n} k {k}");
            }
        }
    }

    #[test]
    fn rejects_bad_features() {
        assert!(knn_indices(2, 2, &[1.0, 0.0, f32::NAN, 1.0], 1, 4).is_err());
        assert!(knn_indices(2, 2, &[1.0, 0.0, 1.0], 1, 4).is_err());
        assert!(item_graph(2, &[], &[], &KnnParams::default()).is_err());
    }
}
